"""A typed async client for the parts of the Plex Media Server API the scanner uses.

One ``httpx.AsyncClient`` per server with HTTP keep-alive; the token travels only in the
``X-Plex-Token`` header (never in a URL, so never in a log, span, event or error). Requests are
bounded by a semaphore, retried with exponential backoff and full jitter on timeouts, dropped
connections, 5xx and 429 (honouring ``Retry-After``). A 401 asks the credentials provider once for fresh
credentials (``recheck``) and then gives up with `PlexUnauthorizedError`.

A hostile or broken server cannot make the scanner hang, loop or blow up: a body larger than
``max_body_bytes`` is refused before it is read whole; a body that does not parse is retried
``malformed_retries`` times (a proxy may have mangled it once) and then fails the request with
`PlexMalformedError`, which names the request path and the problem; listings trust ``totalSize`` only when
it can be true and end at the first short page; a listing's repeated rating keys are dropped, and a full
page of nothing new (a server that ignores the offset) fails the listing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from plexsync.common.metrics import METRICS
from plexsync.common.plex_tls import plex_ssl_context
from plexsync.scanner.plex_models import (
    MetadataPage,
    PlexMetadata,
    PlexParseError,
    PlexSection,
    PlexTag,
    Raw,
    ServerInfo,
    entry_key,
    parse_container,
    parse_page,
    parse_sections,
    parse_server_info,
    parse_tags,
    plausible_total,
    read_list,
    read_opt_int,
    total_size,
)
from plexsync.scanner.stats import ScanStats

log = logging.getLogger(__name__)
tracer = trace.get_tracer("plexsync.scanner.plex")

PRODUCT = "plexsync"
VERSION = "0.1.0"
MAX_RETRY_AFTER_SECONDS = 60.0
# The largest answer read: a 500-entry listing page or 50 items' full metadata is a few MB; 10,000 entries ~30 MB.
MAX_BODY_BYTES = 48 * 1024 * 1024
TYPE_MOVIE, TYPE_SHOW, TYPE_SEASON, TYPE_EPISODE, TYPE_COLLECTION = 1, 2, 3, 4, 18
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PlexCredentials:
    base_url: str
    token: str
    client_identifier: str = "plexsync-scanner"

    def __repr__(self) -> str:  # never show the token
        return f"PlexCredentials(base_url={self.base_url!r}, token=<redacted>)"


CredentialsProvider = Callable[[bool], Awaitable[PlexCredentials]]


class PlexError(Exception):
    """Plex could not answer a request; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int = 0, path: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.path = path


class PlexUnauthorizedError(PlexError):
    """Plex refused the token (401), even after asking for fresh credentials."""


class PlexNotFoundError(PlexError):
    """Plex has no such item or section (404)."""


class PlexUnavailableError(PlexError):
    """Plex stayed unreachable or failing (timeouts, dropped connections, 5xx, 429) after every retry."""


class PlexCertificateError(PlexError):
    """Plex's TLS certificate could not be verified (untrusted, expired, not for this name): not retried, since
    asking again cannot fix it, and never silently accepted."""


class PlexMalformedError(PlexError):
    """Plex answered something that is not a usable answer (does not parse, too large, a listing that does not
    advance), and asking again did not help."""


class _Retryable(Exception):
    def __init__(self, message: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class _Malformed(_Retryable):
    """A 200 whose body cannot be used; retried at most ``malformed_retries`` times (never when ``final``)."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message, 200)
        self.final = final


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class PlexClient:
    """``async with PlexClient(creds) as plex: await plex.sections()``."""

    def __init__(
        self,
        credentials: PlexCredentials,
        *,
        refresh: CredentialsProvider | None = None,
        fmt: Literal["json", "xml"] = "json",
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float = 0.2,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        stats: ScanStats | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        malformed_retries: int = 1,
        verify: ssl.SSLContext | bool | None = None,
    ) -> None:
        """``verify``: the trust for HTTPS (`plex_ssl_context`; None = the usual CAs, False = no verification)."""
        self._creds = credentials
        # Requests, bytes and time per category, for the scan this client serves.
        self.stats = stats if stats is not None else ScanStats()
        self._refresh = refresh
        self._refreshed = False
        self._refresh_lock = asyncio.Lock()
        self.fmt = fmt
        self.max_retries = max_retries
        self.max_body_bytes = max_body_bytes
        self.malformed_retries = malformed_retries
        self.backoff = backoff
        self._sem = asyncio.Semaphore(concurrency)
        self.requests = 0
        self.retries = 0
        headers = {
            "Accept": "application/json" if fmt == "json" else "application/xml",
            "X-Plex-Product": PRODUCT,
            "X-Plex-Version": VERSION,
            "X-Plex-Client-Identifier": credentials.client_identifier,
            "X-Plex-Platform": "Python",
            "X-Plex-Device": "plexsync-scanner",
            "X-Plex-Token": credentials.token,
        }
        self._http = httpx.AsyncClient(
            base_url=credentials.base_url.rstrip("/"),
            verify=plex_ssl_context() if verify is None else verify,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4),
            transport=transport,
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        return self._creds.base_url

    async def __aenter__(self) -> PlexClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ transport
    async def get(
        self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[dict[str, Any], httpx.Headers]:
        """GET ``path`` and return its MediaContainer (retrying what is worth retrying)."""
        return await self.get_decoded(path, params, headers, _parse)

    async def get_decoded(
        self,
        path: str,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
        decode: Callable[[bytes, str], Awaitable[T]],
    ) -> tuple[T, httpx.Headers]:
        """`get`, with the body turned into a result by ``decode(body, content_type)`` (which may hand the work to
        another process); a `PlexParseError` from it is retried ``malformed_retries`` times, then raised as
        `PlexMalformedError`."""
        attempt = malformed = 0
        token_used = self._creds.token
        while True:
            try:
                async with self._sem:
                    return await self._once(path, params, headers, decode)
            except _Retryable as exc:
                attempt += 1
                if isinstance(exc, _Malformed):
                    malformed += 1
                    if exc.final or malformed > self.malformed_retries or attempt > self.max_retries:
                        raise PlexMalformedError(
                            f"Plex at {self.base_url} sent a malformed answer for {path}: {exc}", path=path
                        ) from None
                if attempt > self.max_retries:
                    raise PlexUnavailableError(
                        f"Plex at {self.base_url} failed {path} {attempt} times (last: {exc}); "
                        "check that the server is up and not overloaded",
                        status=exc.status,
                        path=path,
                    ) from None
                self.retries += 1
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                log.debug("retrying Plex request", extra={"path": path, "attempt": attempt, "error": str(exc)})
                await asyncio.sleep(delay)
            except PlexUnauthorizedError:
                if not await self._renew(token_used):
                    raise
                token_used = self._creds.token

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff * (2 ** (attempt - 1)), 10.0)) + self.backoff / 4

    async def _renew(self, token_used: str) -> bool:
        """After a 401: ask once for fresh credentials (recheck). False when that was already tried."""
        if self._refresh is None:
            return False
        async with self._refresh_lock:
            if self._creds.token != token_used:
                return True  # another request renewed meanwhile
            if self._refreshed:
                return False
            self._refreshed = True
            try:
                creds = await self._refresh(True)
            except Exception as exc:
                log.warning("could not refresh Plex credentials", extra={"error": type(exc).__name__})
                return False
            self._creds = creds
            self._http.base_url = httpx.URL(creds.base_url.rstrip("/"))
            self._http.headers["X-Plex-Token"] = creds.token
            return True

    async def _once(
        self,
        path: str,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
        decode: Callable[[bytes, str], Awaitable[T]],
    ) -> tuple[T, httpx.Headers]:
        endpoint = endpoint_template(path)
        # One INTERNAL span per attempt; the httpx instrumentation adds the CLIENT span with http.* beneath it.
        with tracer.start_as_current_span(f"plex GET {endpoint}") as span:
            span.set_attribute("plexsync.plex.endpoint", endpoint)
            self.requests += 1
            started = time.monotonic()
            status = 0
            received = 0
            try:
                try:
                    request = self._http.build_request("GET", path, params=params, headers=headers)
                    resp = await self._http.send(request, stream=True)
                    try:
                        status = resp.status_code
                        span.set_attribute("http.response.status_code", status)
                        body = await self._read_body(resp)
                    finally:
                        await resp.aclose()
                except httpx.TimeoutException:
                    raise _Retryable("timed out") from None
                except httpx.TransportError as exc:
                    reason = certificate_failure(exc)
                    if reason is not None:
                        raise PlexCertificateError(
                            f"Plex at {_host(self.base_url)}: the TLS certificate could not be verified ({reason})",
                            path=path,
                        ) from None
                    raise _Retryable(f"connection failed ({type(exc).__name__})") from None
                received = len(body)
                if status == 200:
                    try:
                        return await decode(body, resp.headers.get("content-type", "")), resp.headers
                    except PlexParseError as exc:
                        raise _Malformed(str(exc)) from None
                if status == 429 or status >= 500:
                    raise _Retryable(f"HTTP {status}", status, _retry_after(resp.headers.get("Retry-After")))
                if status == 401:
                    raise PlexUnauthorizedError(
                        f"Plex at {self.base_url} refused the token (401) for {path}", status=401, path=path
                    )
                if status == 404:
                    raise PlexNotFoundError(f"Plex has nothing at {path} (404)", status=404, path=path)
                raise PlexError(f"Plex answered HTTP {status} for {path}", status=status, path=path)
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                METRICS.plex_request_errors.add(
                    1, {"plexsync.plex.endpoint": endpoint, "error.type": str(status) if status else type(exc).__name__}
                )
                raise
            finally:
                elapsed = time.monotonic() - started
                self.stats.plex_request(endpoint, elapsed, received)
                METRICS.plex_request_duration.record(
                    elapsed, {"plexsync.plex.endpoint": endpoint, "http.response.status_code": status}
                )

    async def _read_body(self, resp: httpx.Response) -> bytes:
        """The (decompressed) body, refused as soon as it is known to exceed ``max_body_bytes``."""
        cap = self.max_body_bytes
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap and "content-encoding" not in resp.headers:
            raise _Malformed(f"the answer is {int(declared):,} bytes, more than the {cap:,} read", final=True)
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise _Malformed(f"the answer is more than the {cap:,} bytes read", final=True)
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ API
    async def server_info(self) -> ServerInfo:
        container, _ = await self.get("/")
        return parse_server_info(container)

    async def sections(self) -> list[PlexSection]:
        container, _ = await self.get("/library/sections")
        return parse_sections(container)

    async def count(self, path: str, params: dict[str, str] | None = None) -> int:
        """How many items a listing holds (``X-Plex-Container-Size=0``: only ``totalSize`` comes back)."""
        container, headers = await self.get(path, params, _page_headers(0, 0))
        return total_size(container, headers)

    async def pages(
        self, path: str, params: dict[str, str] | None = None, *, page_size: int = 500
    ) -> AsyncIterator[MetadataPage]:
        """Page through a listing with X-Plex-Container-Start/Size; one page in memory at a time. Entries that
        cannot be read are reported in each page's ``broken``."""
        async for raw in self.raw_pages(path, params, page_size=page_size):
            page = parse_page({"Metadata": raw.entries})
            page.offset, page.total_size = raw.offset, raw.total_size
            yield page

    async def raw_pages(
        self, path: str, params: dict[str, str] | None = None, *, page_size: int = 500
    ) -> AsyncIterator[RawPage]:
        """`pages` with the entries left as parsed JSON (or XML as the same dicts): for ETags, which need a
        few fields of every entry, not a `PlexMetadata` of each. A rating key listed again is left out."""
        start = 0
        listed = Listed(path)
        while True:
            container, headers = await self.get(path, params, _page_headers(start, page_size))
            entries = read_list(container, "Metadata")
            total = listed_total(container, headers)
            fresh = listed.fresh(entries, start, full=len(entries) >= page_size)
            yield RawPage(fresh, start, total or 0)
            start += page_size  # not len(entries): a server may send more than asked (repeats), never skip any
            if not entries or len(entries) < page_size or (total is not None and start >= total):
                listed.report()
                return
            listed.check_length(start)

    def section_items(self, section_key: str, type_num: int, *, page_size: int) -> AsyncIterator[MetadataPage]:
        return self.pages(
            f"/library/sections/{section_key}/all", {"type": str(type_num), "includeGuids": "1"}, page_size=page_size
        )

    async def section_count(self, section_key: str, type_num: int) -> int:
        return await self.count(f"/library/sections/{section_key}/all", {"type": str(type_num)})

    def section_entries(self, section_key: str, type_num: int, *, page_size: int) -> AsyncIterator[RawPage]:
        return self.raw_pages(
            f"/library/sections/{section_key}/all", {"type": str(type_num), "includeGuids": "1"}, page_size=page_size
        )

    def children(self, rating_key: str, *, page_size: int) -> AsyncIterator[MetadataPage]:
        return self.pages(f"/library/metadata/{rating_key}/children", {"includeGuids": "1"}, page_size=page_size)

    def all_leaves(self, rating_key: str, *, page_size: int) -> AsyncIterator[MetadataPage]:
        return self.pages(f"/library/metadata/{rating_key}/allLeaves", {"includeGuids": "1"}, page_size=page_size)

    def collection_children(self, rating_key: str, *, page_size: int) -> AsyncIterator[MetadataPage]:
        return self.pages(f"/library/collections/{rating_key}/children", None, page_size=page_size)

    async def metadata(self, rating_keys: Sequence[str]) -> list[PlexMetadata]:
        """Full metadata (all credits, streams, chapters) of one or more items in one request; an entry that
        cannot be read fails it with `PlexMalformedError` (so no caller takes an unreadable item for a gone one)."""
        page = await self.metadata_page(rating_keys)
        if page.broken:
            path = f"/library/metadata/{','.join(rating_keys)}"
            rating_key, why = page.broken[0]
            raise PlexMalformedError(
                f"Plex sent malformed metadata for {path}: item {rating_key or '(no ratingKey)'}: {why}", path=path
            )
        return page.items

    async def metadata_page(self, rating_keys: Sequence[str]) -> MetadataPage:
        """`metadata`, with the entries that could not be read in ``broken``."""
        ids = ",".join(rating_keys)
        container, _ = await self.get(f"/library/metadata/{ids}", {"includeChapters": "1"})
        return parse_page(container)

    async def network_tags(self, section_key: str) -> list[PlexTag]:
        container, _ = await self.get("/library/tags", {"type": "319", "librarySectionID": section_key})
        return parse_tags(container)


def listed_total(container: Raw, headers: httpx.Headers) -> int | None:
    """A listing page's ``totalSize`` (or its header) when it can be true; None when absent or impossible."""
    try:
        total = plausible_total(read_opt_int(container, "totalSize"))
    except PlexParseError:
        total = None
    raw = headers.get("X-Plex-Container-Total-Size", "")
    return total if total is not None else plausible_total(int(raw)) if raw.isdigit() else None


async def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    return parse_container(body, content_type)


def certificate_failure(exc: BaseException) -> str | None:
    """Why certificate verification failed (OpenSSL's short reason: "unable to get local issuer certificate",
    "certificate has expired", "Hostname mismatch, ..."), when that is what `exc` comes from; else None."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return None
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or current.reason or "certificate verify failed")
        current = current.__cause__ or current.__context__
    return None


def _host(url: str) -> str:
    """scheme://host:port of a base URL (what a message may name)."""
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}:{u.port}" if u.port else f"{u.scheme}://{u.host}"


_IDS = re.compile(r"/[0-9][0-9,]*(?=/|$)")


def endpoint_template(path: str) -> str:
    """Low-cardinality name of a Plex path: /library/metadata/1,2,3/children -> /library/metadata/{id}/children."""
    return _IDS.sub("/{id}", path)


def page_headers(start: int, size: int) -> dict[str, str]:
    return _page_headers(start, size)


def _page_headers(start: int, size: int) -> dict[str, str]:
    return {"X-Plex-Container-Start": str(start), "X-Plex-Container-Size": str(size)}


class Listed:
    """The rating keys one listing has returned so far, so a key listed again (offset paging while Plex changes, or
    a broken server) is left out; a full page of nothing new means paging does not advance, which fails the
    listing rather than loop. Holds one small int (or str) per entry of the listing, for the listing's time."""

    __slots__ = ("_keys", "_path", "repeated")

    def __init__(self, path: str) -> None:
        self._path = path
        self._keys: set[int | str] = set()
        self.repeated = 0

    def first(self, rating_key: str) -> bool:
        """True the first time ``rating_key`` comes (an empty key always: it is reported as broken elsewhere)."""
        if not rating_key:
            return True
        key: int | str = int(rating_key) if rating_key.isdigit() and len(rating_key) < 19 else rating_key
        if key in self._keys:
            self.repeated += 1
            return False
        self._keys.add(key)
        return True

    def fresh(self, entries: list[Raw], start: int, *, full: bool) -> list[Raw]:
        out = [e for e in entries if self.first(entry_key(e))]
        self.check_progress(len(out), start, full=full)
        return out

    def check_progress(self, new: int, start: int, *, full: bool) -> None:
        if full and start and not new:
            raise PlexMalformedError(
                f"Plex listed only rating keys it had listed already at offset {start} of {self._path}; "
                "paging does not advance",
                path=self._path,
            )

    def check_length(self, start: int) -> None:
        if start > MAX_LISTING:
            raise PlexMalformedError(f"Plex listed more than {MAX_LISTING:,} entries at {self._path}", path=self._path)

    def report(self) -> None:
        if self.repeated:
            log.warning("Plex listed rating keys twice", extra={"path": self._path, "repeated": self.repeated})


MAX_LISTING = 50_000_000


@dataclass(slots=True)
class RawPage:
    """One page of a listing with its entries unparsed (``MediaContainer.Metadata`` as dicts)."""

    entries: list[Raw]
    offset: int
    total_size: int


async def collect(pages: AsyncIterator[MetadataPage]) -> list[PlexMetadata]:
    """All items of a (small) listing, e.g. one show's seasons."""
    out: list[PlexMetadata] = []
    async for page in pages:
        out.extend(page.items)
    return out
