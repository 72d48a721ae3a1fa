"""The fake Plex Media Server + plex.tv HTTP server (aiohttp), with its control API and websockets.

Listeners: ``local`` (the main host:port), ``remote`` (by default 127.0.0.2 on the same port — every
127/8 address answers on Linux loopback), ``relay`` (127.0.0.1 on its own port), ``https`` (a TLS
listener with a generated ``*.<hash>.plex.direct`` certificate, listed as a remote HTTPS connection)
and any number of ``extraN``. All serve the same app; each can be taken down or slowed through the
control API, which is how tests exercise connection choice. An optional ``control`` listener serves
the same app (plex.tv and the control API included) but is not one of the server's connections, so
every connection can be taken down while tests still reach plex.tv and the control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import socket
import ssl
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from plexsync.fakeplex import render
from plexsync.fakeplex.faults import XML_TYPE, FaultInjector, FaultRule, corrupt
from plexsync.fakeplex.library import TYPE_NUMBERS, Event, Library, LibraryError, LibrarySpec, SectionSpec
from plexsync.fakeplex.notify import DEFAULT_PING_S, DEFAULT_QUEUE_SIZE, NotificationHub, library_messages
from plexsync.fakeplex.plextv import APPROVAL_PAGE, PlexTvHandlers, PlexTvState
from plexsync.fakeplex.tls import TlsMaterial, generate
from yarl import URL

DEFAULT_TOKEN = "fakeplex-token"
SERVER_VERSION = "1.41.3.9314-a0bfb8370"
CONTROL_PREFIX = "/__fakeplex"
CONTROL_LISTENER = "control"
# Never shown by the request log: the token headers (and anything else that carries credentials).
SECRET_HEADERS = frozenset({"x-plex-token", "authorization", "proxy-authorization", "cookie"})
REDACTED = "<redacted>"
_UNAUTHORIZED = b"<html><head><title>Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>"
_PAGING_HEADERS = ("X-Plex-Container-Start", "X-Plex-Container-Size")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Listener:
    """One listening address. ``state`` is ``up``, ``down`` (refused, open sockets cut) or ``slow``."""

    name: str
    host: str
    port: int
    site: web.SockSite | None = None
    state: str = "up"
    delay_s: float = 0.0
    ssl_context: ssl.SSLContext | None = None

    @property
    def protocol(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def uri(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"


@dataclass(slots=True)
class _Cached:
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _host_port(spec: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    return host or default_host, int(port or 0)


# (time, listener, method, route template, raw path + query, headers): recorded as-is, cheap to append;
# parsed and stripped of tokens only when someone reads the log.
_LogEntry = tuple[float, str, str, str, str, "CIMultiDictProxy[str]"]


class FakePlex:
    """A Plex Media Server + plex.tv emulator. ``async with FakePlex() as fp: fp.url``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        extra_tokens: Iterable[str] = (),
        account_token: str | None = None,
        library: Library | None = None,
        spec: LibrarySpec | None = None,
        remote: str | None = "127.0.0.2",
        relay: str | None = "127.0.0.1:0",
        extra_listen: Iterable[str] = (),
        machine_identifier: str | None = None,
        friendly_name: str = "FakePlex",
        pin_ttl: int = 1800,
        pin_auto_approve_after: int | None = None,
        fault_seed: int = 0,
        control_listen: str | None = None,
        tls_listen: str | None = None,
        tls_dir: str | Path | None = None,
        tls_ca_file: str | Path | None = None,
        request_log_size: int = 2000,
        latency_ms: float = 0.0,
        latency_jitter_ms: float | None = None,
        eventsource_ping_s: float = DEFAULT_PING_S,
        notification_queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.tokens: set[str] = {token, *extra_tokens}
        self.account_token = account_token or token
        self.tokens.add(self.account_token)
        self.library = library or Library(spec)
        seed = self.library.seed
        self.machine_identifier = machine_identifier or hashlib.sha1(f"fakeplex/{seed}".encode()).hexdigest()
        self.library.machine_identifier = self.machine_identifier
        self.friendly_name = friendly_name
        self.faults = FaultInjector(seed=fault_seed)
        if latency_ms:
            self.faults.set_base_latency(
                latency_ms, latency_ms / 10 if latency_jitter_ms is None else latency_jitter_ms
            )
        self.counters: Counter[str] = Counter()
        self.plextv = PlexTvState(self.account_token, pin_ttl, pin_auto_approve_after, seed)
        self._remote_host = remote
        self._relay = relay
        self._extra = list(extra_listen)
        self._control_listen = control_listen
        self._tls_listen = tls_listen
        self._tls_dir = Path(tls_dir) if tls_dir is not None else None
        self._tls_ca_file = Path(tls_ca_file) if tls_ca_file is not None else None
        self._tls_tmp: Path | None = None
        self.tls: TlsMaterial | None = None
        self.plex_direct_hash = hashlib.sha1(f"plex.direct/{self.machine_identifier}".encode()).hexdigest()[:32]
        self.listed = True  # whether plex.tv's resources list this server
        self.request_log: deque[_LogEntry] = deque(maxlen=max(1, request_log_size))
        self.requests_seen = 0
        self.listeners: dict[str, Listener] = {}
        self.control_listener: Listener | None = None
        self._by_sock: dict[tuple[str, int], Listener] = {}
        self._runner: web.AppRunner | None = None
        self._cache: dict[tuple[Any, ...], _Cached] = {}
        self._cache_version = -1
        self.notifications = NotificationHub(ping_interval=eventsource_ping_s, queue_size=notification_queue_size)
        self.app = self._make_app()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return self.listeners["local"].uri

    @property
    def control_url(self) -> str:
        """Where plex.tv and the control API are reached: the control listener, else the main one."""
        return self.control_listener.uri if self.control_listener is not None else self.url

    @property
    def plextv_url(self) -> str:
        """plex.tv is served on every listener; use the control one (never a server connection) when there is one."""
        return self.control_url

    async def __aenter__(self) -> FakePlex:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        main = await self._listen("local", self.host, self.port)
        self.port = main.port
        if self._remote_host:
            try:
                await self._listen("remote", self._remote_host, self.port)
            except OSError:
                await self._listen("remote", self._remote_host, 0)
        if self._relay:
            rhost, _, rport = self._relay.rpartition(":")
            await self._listen("relay", rhost or "127.0.0.1", int(rport or 0))
        if self._tls_listen:
            thost, tport = _host_port(self._tls_listen)
            directory = self._tls_dir
            if directory is None:
                directory = self._tls_tmp = Path(tempfile.mkdtemp(prefix="fakeplex-tls-"))
            self.tls = generate(
                directory, plex_direct_hash=self.plex_direct_hash, hosts=[thost], ca_file=self._tls_ca_file
            )
            await self._listen("https", thost, tport, self.tls.server_context())
        for n, spec in enumerate(self._extra, start=1):
            await self._listen(f"extra{n}", *_host_port(spec))
        if self._control_listen:
            await self._listen(CONTROL_LISTENER, *_host_port(self._control_listen))

    async def _listen(self, name: str, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> Listener:
        assert self._runner is not None
        sock = _bind(host, port)
        bound_port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, ssl_context=ssl_context)
        await site.start()
        if name == CONTROL_LISTENER:
            listener = self.control_listener or Listener(name, host, bound_port, ssl_context=ssl_context)
            self.control_listener = listener
        else:
            listener = self.listeners.get(name) or Listener(name, host, bound_port, ssl_context=ssl_context)
            self.listeners[name] = listener
        listener.port = bound_port
        listener.site = site
        self._by_sock[(host, bound_port)] = listener
        return listener

    @property
    def eventsource_ping_s(self) -> float:
        """Seconds between the ``: ping`` comments of an EventSource stream (may be changed at run time)."""
        return self.notifications.ping_interval

    @eventsource_ping_s.setter
    def eventsource_ping_s(self, value: float) -> None:
        self.notifications.ping_interval = value

    async def stop(self) -> None:
        await self.notifications.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tls_tmp is not None:
            shutil.rmtree(self._tls_tmp, ignore_errors=True)
            self._tls_tmp = None

    async def set_listener(self, name: str, state: str, delay_ms: float = 0.0) -> Listener:
        """Take a connection ``down`` (refuse + cut), make it ``slow`` (delay each answer) or ``up``."""
        listener = self.listeners[name]
        if state not in ("up", "down", "slow"):
            raise ValueError(f"state must be up, down or slow, not {state!r}")
        if state == "down" and listener.site is not None:
            await listener.site.stop()
            listener.site = None
        if state != "down" and listener.site is None:
            await self._listen(name, listener.host, listener.port, listener.ssl_context)
        listener.state = state
        listener.delay_s = delay_ms / 1000.0 if state == "slow" else 0.0
        return listener

    # ------------------------------------------------------------------ app
    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        pms = [
            web.get("/", self.h_root),
            web.get("/identity", self.h_identity),
            web.get("/library/sections", self.h_sections),
            web.get("/library/sections/all", self.h_sections),
            web.get("/library/sections/{section_id}/all", self.h_section_all),
            web.get("/library/sections/{section_id}/collections", self.h_section_collections),
            web.get("/library/all", self.h_library_all),
            web.get("/library/tags", self.h_tags),
            web.get("/library/metadata/{ids}", self.h_metadata),
            web.get("/library/metadata/{ids}/children", self.h_children),
            web.get("/library/metadata/{ids}/allLeaves", self.h_all_leaves),
            web.get("/library/collections/{collection_id}/children", self.h_collection_children),
            web.get("/library/collections/{collection_id}/items", self.h_collection_children),
            web.get("/:/websockets/notifications", self.h_websocket),
            web.get("/:/websocket/notifications", self.h_websocket),
            web.get("/:/eventsource/notifications", self.h_eventsource),
        ]
        plextv = PlexTvHandlers(
            self.plextv,
            self._token_ok,
            lambda https, relay: self.resources(include_https=https, include_relay=relay),
            self.user,
        )
        control = [
            web.get(CONTROL_PREFIX + "/info", self.c_info),
            web.get(CONTROL_PREFIX + "/stats", self.c_stats),
            web.post(CONTROL_PREFIX + "/stats/reset", self.c_stats_reset),
            web.post(CONTROL_PREFIX + "/reset", self.c_reset),
            web.get(CONTROL_PREFIX + "/faults", self.c_faults_get),
            web.put(CONTROL_PREFIX + "/faults", self.c_faults_set),
            web.post(CONTROL_PREFIX + "/faults", self.c_faults_add),
            web.delete(CONTROL_PREFIX + "/faults", self.c_faults_clear),
            web.put(CONTROL_PREFIX + "/latency", self.c_latency),
            web.post(CONTROL_PREFIX + "/items", self.c_item_add),
            web.post(CONTROL_PREFIX + "/items/bulk", self.c_items_bulk),
            web.get(CONTROL_PREFIX + "/items/{rk}", self.c_item_get),
            web.patch(CONTROL_PREFIX + "/items/{rk}", self.c_item_change),
            web.delete(CONTROL_PREFIX + "/items/{rk}", self.c_item_delete),
            web.post(CONTROL_PREFIX + "/sections", self.c_section_add),
            web.delete(CONTROL_PREFIX + "/sections/{key}", self.c_section_remove),
            web.post(CONTROL_PREFIX + "/items/{rk}/move", self.c_item_move),
            web.post(CONTROL_PREFIX + "/items/{rk}/media", self.c_item_media),
            web.post(CONTROL_PREFIX + "/items/{rk}/replace-file", self.c_item_replace),
            web.post(CONTROL_PREFIX + "/tokens", self.c_token_add),
            web.delete(CONTROL_PREFIX + "/tokens/{token}", self.c_token_revoke),
            web.post(CONTROL_PREFIX + "/pins/auto-approve", self.c_pin_auto),
            web.post(CONTROL_PREFIX + "/pins/{pin_id}/approve", self.c_pin_approve),
            web.post(CONTROL_PREFIX + "/pins/by-code/{code}/approve", self.c_pin_approve_code),
            web.get(CONTROL_PREFIX + "/auth", self.c_approval_page),
            web.post(CONTROL_PREFIX + "/pins/{pin_id}/expire", self.c_pin_expire),
            web.get(CONTROL_PREFIX + "/pins", self.c_pins),
            web.post(CONTROL_PREFIX + "/connections/{name}", self.c_connection),
            web.post(CONTROL_PREFIX + "/resources/hidden", self.c_resources_hidden),
            web.get(CONTROL_PREFIX + "/notifications", self.c_notifications),
            web.post(CONTROL_PREFIX + "/notifications/drop", self.c_notifications_drop),
            web.post(CONTROL_PREFIX + "/notifications/silence", self.c_notifications_silence),
            web.post(CONTROL_PREFIX + "/notifications/skip", self.c_notifications_skip),
            web.post(CONTROL_PREFIX + "/notifications/refuse", self.c_notifications_refuse),
            web.get(CONTROL_PREFIX + "/requests", self.c_requests),
            web.delete(CONTROL_PREFIX + "/requests", self.c_requests_clear),
        ]
        app.add_routes(pms + plextv.routes() + control)
        return app

    def _token_ok(self, request: web.Request) -> bool:
        tok = request.headers.get("X-Plex-Token") or request.query.get("X-Plex-Token")
        return tok is not None and tok in self.tokens

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(CONTROL_PREFIX):
            return await handler(request)
        transport = request.transport
        listener_name = "local"
        if transport is not None and len(self._by_sock) > 1:
            sockname = transport.get_extra_info("sockname")
            listener = self._by_sock.get((sockname[0], sockname[1])) if sockname else None
            if listener is not None:
                listener_name = listener.name
                if listener.state != "up":
                    if listener.state == "down":
                        transport.abort()
                        raise asyncio.CancelledError
                    await asyncio.sleep(listener.delay_s)
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else "<unmatched>"
        method = request.method
        self.counters[f"{method} {template}"] += 1
        self.requests_seen += 1
        self.request_log.append((time.time(), listener_name, method, template, request.raw_path, request.headers))
        decision = self.faults.decide(path)
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        rule = decision.action
        if rule is not None and rule.kind in ("error", "rate_limit", "drop"):
            return self._fault_response(request, rule)
        if not (path == "/identity" or path.startswith("/api/v2/") or self._token_ok(request)):
            return web.Response(status=401, body=_UNAUTHORIZED, content_type="text/html")
        response = await handler(request)
        if rule is not None and isinstance(response, web.Response) and response.body is not None:
            return await self._mangle(request, response, rule, handler)
        return response

    def _fault_response(self, request: web.Request, rule: FaultRule) -> web.Response:
        if rule.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if rule.kind == "rate_limit":
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": str(rule.retry_after)})
        headers = {"Retry-After": str(rule.retry_after)} if rule.status == 503 else {}
        return web.Response(status=rule.status, text=f"fakeplex injected {rule.status}", headers=headers)

    async def _mangle(
        self, request: web.Request, response: web.Response, rule: FaultRule, handler: Handler
    ) -> web.StreamResponse:
        body = response.body
        assert isinstance(body, bytes)
        if rule.kind == "malformed" and rule.variant:
            return await self._malformed(request, response, rule.variant, handler)
        if rule.kind == "malformed":
            broken = body[: max(1, len(body) // 2)] + b"\x00<{]]"
            return web.Response(body=broken, status=200, content_type=response.content_type)
        stream = web.StreamResponse(status=response.status, headers=response.headers)
        stream.content_length = len(body)
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        await asyncio.sleep(0.01)
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError

    async def _malformed(
        self, request: web.Request, response: web.Response, variant: str, handler: Handler
    ) -> web.Response:
        """The real answer, corrupted as ``variant`` says (`faults.corrupt`); a failed answer stays as it is.

        The real answer is asked again as JSON, so every variant starts from the same dict. ``duplicate_keys`` on a
        page after the first answers the page one entry earlier (as Plex does when an item was added before the
        offset while a client pages), so the previous page's last entry comes again."""
        if response.status != 200:
            return response
        start, _ = self._paging(request)
        shifted = variant == "duplicate_keys" and start > 0
        headers = CIMultiDict(request.headers)
        headers["Accept"] = "application/json"
        url = request.rel_url
        if shifted:
            headers["X-Plex-Container-Start"] = str(start - 1)
            if "X-Plex-Container-Start" in url.query:
                url = url.update_query({"X-Plex-Container-Start": str(start - 1)})
        real = await handler(request.clone(headers=headers, rel_url=url))
        if not isinstance(real, web.Response) or not isinstance(real.body, bytes) or real.status != 200:
            return response
        container = orjson.loads(real.body)["MediaContainer"]
        if shifted:
            container["offset"] = start
        out = corrupt(variant, container, wants_json=self._wants_json(request))
        extra = {k: v for k, v in response.headers.items() if k.startswith("X-Plex-")}
        extra.update(out.headers)
        charset = "utf-8" if out.content_type == XML_TYPE else None
        return web.Response(body=out.body, content_type=out.content_type, charset=charset, headers=extra)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _wants_json(request: web.Request) -> bool:
        return "json" in request.headers.get("Accept", "")

    def _send(
        self, request: web.Request, container: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        if self._wants_json(request):
            return web.Response(body=render.to_json(container), content_type="application/json", headers=headers)
        return web.Response(body=render.to_xml(container), content_type="text/xml", charset="utf-8", headers=headers)

    @staticmethod
    def _paging(request: web.Request) -> tuple[int, int | None]:
        vals: list[int | None] = []
        for name in _PAGING_HEADERS:
            raw = request.query.get(name) or request.headers.get(name)
            try:
                vals.append(int(raw) if raw not in (None, "") else None)
            except ValueError:
                raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
        start = max(0, vals[0] or 0)
        size = vals[1]
        return start, (max(0, size) if size is not None else None)

    def _cache_key(self, request: web.Request, start: int, size: int | None) -> tuple[Any, ...]:
        query = tuple(sorted((k, v) for k, v in request.query.items() if not k.startswith("X-Plex-")))
        return (request.path, query, start, size, self._wants_json(request))

    def _cached(self, key: tuple[Any, ...]) -> web.Response | None:
        if self._cache_version != self.library.version:
            self._cache.clear()
            self._cache_version = self.library.version
            return None
        hit = self._cache.get(key)
        if hit is None:
            return None
        return web.Response(
            body=hit.body,
            headers=hit.headers,
            content_type=hit.content_type,
            charset="utf-8" if hit.content_type == "text/xml" else None,
        )

    def _store(self, key: tuple[Any, ...], response: web.Response, headers: dict[str, str]) -> None:
        if len(self._cache) > 8192:
            self._cache.clear()
        body = response.body
        assert isinstance(body, bytes)
        self._cache[key] = _Cached(body, response.content_type, headers)

    def _listing(
        self,
        request: web.Request,
        keys: Callable[[], list[int]],
        attrs: Callable[[], dict[str, Any]],
        *,
        include_guids: bool = False,
        include_section: bool = False,
    ) -> web.Response:
        """A paged MediaContainer of Metadata; answers from the page cache when nothing changed."""
        start, size = self._paging(request)
        ckey = self._cache_key(request, start, size)
        hit = self._cached(ckey)
        if hit is not None:
            return hit
        try:
            all_keys = keys()
            container = attrs()
        except LibraryError as e:
            raise web.HTTPNotFound(text=str(e)) from None
        total = len(all_keys)
        page = all_keys[start:] if size is None else all_keys[start : start + size]
        lib = self.library
        meta = [lib.render(rk, full=False, include_guids=include_guids, include_section=include_section) for rk in page]
        out: dict[str, Any] = {"size": len(meta), "totalSize": total, "offset": start}
        out.update(container)
        if meta:
            out["Metadata"] = meta
        headers = {"X-Plex-Container-Start": str(start), "X-Plex-Container-Total-Size": str(total)}
        response = self._send(request, out, headers)
        self._store(ckey, response, headers)
        return response

    def _section_attrs(self, section_id: int, title2: str, view_group: str) -> dict[str, Any]:
        sec = self.library.section(section_id)
        return {
            "allowSync": True,
            "art": f"/:/resources/{sec.type}-fanart.jpg",
            "identifier": "com.plexapp.plugins.library",
            "librarySectionID": sec.key,
            "librarySectionTitle": sec.title,
            "librarySectionUUID": sec.uuid,
            "mediaTagPrefix": "/system/bundle/media/flags/",
            "mediaTagVersion": 1732000000,
            "thumb": f"/:/resources/{sec.type}.png",
            "title1": sec.title,
            "title2": title2,
            "viewGroup": view_group,
        }

    @staticmethod
    def _int(request: web.Request, name: str) -> int:
        try:
            return int(request.match_info[name])
        except ValueError:
            raise web.HTTPNotFound() from None

    # ------------------------------------------------------------------ PMS handlers
    async def h_root(self, request: web.Request) -> web.Response:
        dirs = [
            {"count": 1, "key": k, "title": k}
            for k in (
                "activities",
                "butler",
                "channels",
                "clients",
                "diagnostics",
                "hubs",
                "library",
                "livetv",
                "media",
                "player",
                "playlists",
                "search",
                "server",
                "servers",
                "statistics",
                "system",
                "transcode",
                "updater",
            )
        ]
        mc = {
            "size": len(dirs),
            "allowCameraUpload": False,
            "allowChannelAccess": True,
            "allowSharing": True,
            "allowSync": True,
            "backgroundProcessing": True,
            "certificate": True,
            "companionProxy": True,
            "countryCode": "dnk",
            "diagnostics": "logs,databases,streaminglogs",
            "eventStream": True,
            "friendlyName": self.friendly_name,
            "livetv": 7,
            "machineIdentifier": self.machine_identifier,
            "myPlex": True,
            "myPlexMappingState": "mapped",
            "myPlexSigninState": "ok",
            "myPlexSubscription": True,
            "myPlexUsername": "owner@fakeplex.invalid",
            "multiuser": True,
            "platform": "Linux",
            "platformVersion": "6.1.0",
            "sync": True,
            "transcoderActiveVideoSessions": 0,
            "updatedAt": int(time.time()),
            "version": SERVER_VERSION,
            "Directory": dirs,
        }
        return self._send(request, mc)

    async def h_identity(self, request: web.Request) -> web.Response:
        mc = {
            "size": 0,
            "apiVersion": "1.1.1",
            "claimed": True,
            "machineIdentifier": self.machine_identifier,
            "version": SERVER_VERSION,
        }
        return self._send(request, mc)

    async def h_sections(self, request: web.Request) -> web.Response:
        dirs = [s.to_plex() for s in self.library.sections.values()]
        mc: dict[str, Any] = {"size": len(dirs), "allowSync": False, "title1": "Plex Library"}
        if dirs:
            mc["Directory"] = dirs
        return self._send(request, mc)

    async def h_section_all(self, request: web.Request) -> web.Response:
        section_id = self._int(request, "section_id")
        lib = self.library
        if section_id not in lib.sections:
            raise web.HTTPNotFound()
        sec = lib.sections[section_id]
        q = request.query
        try:
            tnum = int(q["type"]) if "type" in q else TYPE_NUMBERS[sec.type]
            network = int(q["network"]) if "network" in q else None
        except ValueError:
            raise web.HTTPBadRequest(text="type and network must be integers") from None

        def keys() -> list[int]:
            out = lib.list_keys(section_id, tnum)
            if network is not None:
                idx = lib.network_index(network)
                out = [rk for rk in out if lib.nodes[rk].type == "show" and lib.nodes[rk].network == idx]
            return out

        view = {1: "movie", 2: "show", 3: "season", 4: "episode", 18: "collection"}.get(tnum, "secondary")
        title2 = {18: "Collections"}.get(tnum, "All " + sec.title)
        return self._listing(
            request,
            keys,
            lambda: self._section_attrs(section_id, title2, view),
            include_guids=_truthy(q.get("includeGuids")),
        )

    async def h_section_collections(self, request: web.Request) -> web.Response:
        section_id = self._int(request, "section_id")
        if section_id not in self.library.sections:
            raise web.HTTPNotFound()
        return self._listing(
            request,
            lambda: self.library.list_keys(section_id, 18),
            lambda: self._section_attrs(section_id, "Collections", "collection"),
        )

    async def h_library_all(self, request: web.Request) -> web.Response:
        lib = self.library
        try:
            tnum = int(request.query.get("type", "18"))
        except ValueError:
            raise web.HTTPBadRequest(text="type must be an integer") from None

        def keys() -> list[int]:
            return [rk for key in lib.sections for rk in lib.list_keys(key, tnum)]

        attrs = {
            "allowSync": False,
            "identifier": "com.plexapp.plugins.library",
            "mediaTagPrefix": "/system/bundle/media/flags/",
            "mediaTagVersion": 1732000000,
        }
        return self._listing(
            request, keys, lambda: attrs, include_guids=_truthy(request.query.get("includeGuids")), include_section=True
        )

    async def h_tags(self, request: web.Request) -> web.Response:
        start, size = self._paging(request)
        tags = self.library.networks() if request.query.get("type") == "319" else []
        page = tags[start:] if size is None else tags[start : start + size]
        mc: dict[str, Any] = {
            "size": len(page),
            "totalSize": len(tags),
            "offset": start,
            "allowSync": False,
            "identifier": "com.plexapp.plugins.library",
        }
        if page:
            mc["Directory"] = page
        headers = {"X-Plex-Container-Start": str(start), "X-Plex-Container-Total-Size": str(len(tags))}
        return self._send(request, mc, headers)

    def _ids(self, request: web.Request) -> list[int]:
        try:
            ids = [int(x) for x in request.match_info["ids"].split(",") if x]
        except ValueError:
            raise web.HTTPNotFound() from None
        if not ids or any(i not in self.library.nodes for i in ids):
            raise web.HTTPNotFound()
        return ids

    async def h_metadata(self, request: web.Request) -> web.Response:
        ids = self._ids(request)
        chapters = _truthy(request.query.get("includeChapters"))
        ckey = self._cache_key(request, 0, None)
        hit = self._cached(ckey)
        if hit is not None:
            return hit
        lib = self.library
        meta = [lib.render(rk, full=True, include_chapters=chapters) for rk in ids]
        first = lib.nodes[ids[0]]
        sec = lib.sections[first.section_key]
        mc = {
            "size": len(meta),
            "allowSync": True,
            "identifier": "com.plexapp.plugins.library",
            "librarySectionID": sec.key,
            "librarySectionTitle": sec.title,
            "librarySectionUUID": sec.uuid,
            "mediaTagPrefix": "/system/bundle/media/flags/",
            "mediaTagVersion": 1732000000,
            "Metadata": meta,
        }
        response = self._send(request, mc)
        self._store(ckey, response, {})
        return response

    def _parent_attrs(self, rk: int, view_group: str) -> dict[str, Any]:
        lib = self.library
        node = lib.node(rk)
        sec = lib.sections[node.section_key]
        item = lib.render(rk, full=False)
        attrs: dict[str, Any] = {
            "allowSync": True,
            "identifier": "com.plexapp.plugins.library",
            "key": str(rk),
            "librarySectionID": sec.key,
            "librarySectionTitle": sec.title,
            "librarySectionUUID": sec.uuid,
            "mediaTagPrefix": "/system/bundle/media/flags/",
            "mediaTagVersion": 1732000000,
            "title1": item.get("parentTitle", sec.title),
            "title2": item["title"],
            "viewGroup": view_group,
        }
        if node.type == "season":
            attrs["parentIndex"] = node.index
            attrs["grandparentRatingKey"] = item.get("parentRatingKey")
            attrs["grandparentTitle"] = item.get("parentTitle")
        if "thumb" in item:
            attrs["thumb"] = item["thumb"]
        return attrs

    async def h_children(self, request: web.Request) -> web.Response:
        ids = self._ids(request)
        rk = ids[0]
        node = self.library.nodes[rk]
        view = {"show": "season", "season": "episode"}.get(node.type, "movie")
        return self._listing(
            request,
            lambda: self.library.children_keys(rk),
            lambda: self._parent_attrs(rk, view),
            include_guids=_truthy(request.query.get("includeGuids")),
        )

    async def h_all_leaves(self, request: web.Request) -> web.Response:
        ids = self._ids(request)
        rk = ids[0]
        return self._listing(
            request,
            lambda: self.library.leaf_keys(rk),
            lambda: self._parent_attrs(rk, "episode"),
            include_guids=_truthy(request.query.get("includeGuids")),
        )

    async def h_collection_children(self, request: web.Request) -> web.Response:
        crk = self._int(request, "collection_id")
        node = self.library.nodes.get(crk)
        if node is None or node.type != "collection":
            raise web.HTTPNotFound()
        return self._listing(
            request,
            lambda: self.library.children_keys(crk),
            lambda: self._parent_attrs(
                crk, "movie" if self.library.sections[node.section_key].type == "movie" else "show"
            ),
            include_guids=_truthy(request.query.get("includeGuids")),
        )

    async def h_websocket(self, request: web.Request) -> web.StreamResponse:
        return await self.notifications.websocket(request)

    async def h_eventsource(self, request: web.Request) -> web.StreamResponse:
        return await self.notifications.eventsource(request)

    # ------------------------------------------------------------------ notifications
    def publish(self, events: list[Event]) -> None:
        """Announce ``events`` on every notification connection as a real server would (one burst: activity
        started, timeline entries, activity ended; see `notify.library_messages`)."""
        if not events or not self.notifications.wants():
            return
        self.notifications.publish(library_messages(events, self._section_title))

    def _section_title(self, section_key: int) -> str:
        sec = self.library.sections.get(section_key)
        return sec.title if sec is not None else ""

    # ------------------------------------------------------------------ plex.tv data
    def connections(self, *, include_https: bool = True, include_relay: bool = True) -> list[dict[str, Any]]:
        """The server's connections as plex.tv lists them (the control listener is not one of them).

        Like plex.tv, HTTPS connections come only with ``includeHttps=1`` and the relay only with
        ``includeRelay=1``."""
        out = []
        for lst in self.listeners.values():
            https = lst.ssl_context is not None
            relay = lst.name == "relay"
            if (https and not include_https) or (relay and not include_relay):
                continue
            out.append(
                {
                    "protocol": lst.protocol,
                    "address": lst.host,
                    "port": lst.port,
                    "uri": lst.uri,
                    "local": lst.name == "local",
                    "relay": relay,
                    "IPv6": ":" in lst.host,
                }
            )
        return out

    def resources(self, *, include_https: bool = True, include_relay: bool = True) -> list[dict[str, Any]]:
        """plex.tv's device list: this server (unless hidden with ``listed = False``) and a player."""
        created = "2020-01-01T00:00:00Z"
        server: dict[str, Any] = {
            "name": self.friendly_name,
            "product": "Plex Media Server",
            "productVersion": SERVER_VERSION,
            "platform": "Linux",
            "platformVersion": "6.1.0",
            "device": "PC",
            "clientIdentifier": self.machine_identifier,
            "createdAt": created,
            "lastSeenAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "provides": "server",
            "ownerId": None,
            "sourceTitle": None,
            "publicAddress": "203.0.113.7",
            "accessToken": self.token,
            "owned": True,
            "home": False,
            "synced": False,
            "relay": "relay" in self.listeners,
            "presence": True,
            "httpsRequired": False,
            "publicAddressMatches": True,
            "dnsRebindingProtection": False,
            "natLoopbackSupported": False,
            "connections": self.connections(include_https=include_https, include_relay=include_relay),
        }
        player: dict[str, Any] = {
            "name": "Living Room TV",
            "product": "Plex for Android (TV)",
            "productVersion": "10.20.0",
            "platform": "Android",
            "platformVersion": "12",
            "device": "SHIELD Android TV",
            "clientIdentifier": "fakeplex-player-1",
            "createdAt": created,
            "lastSeenAt": created,
            "provides": "client,player,pubsub-player",
            "ownerId": None,
            "sourceTitle": None,
            "publicAddress": "203.0.113.7",
            "accessToken": None,
            "owned": True,
            "home": False,
            "synced": False,
            "relay": False,
            "presence": False,
            "httpsRequired": False,
            "publicAddressMatches": True,
            "dnsRebindingProtection": False,
            "natLoopbackSupported": False,
            "connections": [],
        }
        return [server, player] if self.listed else [player]

    def user(self) -> dict[str, Any]:
        return {
            "id": 12345678,
            "uuid": "f4k3p13x0wn3r000",
            "username": "fakeplex-owner",
            "title": "Fake Owner",
            "friendlyName": "Fake Owner",
            "email": "owner@fakeplex.invalid",
            "thumb": "https://plex.tv/users/f4k3p13x0wn3r000/avatar?c=1700000000",
            "locale": None,
            "emailOnlyAuth": False,
            "hasPassword": True,
            "protected": False,
            "home": False,
            "twoFactorEnabled": False,
            "restricted": False,
            "joinedAt": 1500000000,
        }

    # ------------------------------------------------------------------ control API
    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return data

    @staticmethod
    def _ok(data: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")

    def _mutate(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except LibraryError as e:
            raise web.HTTPNotFound(text=str(e)) from None
        except (TypeError, ValueError) as e:
            raise web.HTTPBadRequest(text=str(e)) from None

    def info(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "control_url": self.control_url,
            "plextv_url": self.plextv_url,
            "tls_ca_file": str(self.tls.ca_file) if self.tls is not None else None,
            "plex_direct_domain": self.tls.plex_direct_domain if self.tls is not None else None,
            "listed": self.listed,
            "machineIdentifier": self.machine_identifier,
            "token": self.token,
            "account_token": self.account_token,
            "tokens": sorted(self.tokens),
            "connections": self.connections(),
            "counts": self.library.counts(),
            "latency_ms": self.faults.base.latency_ms if self.faults.base is not None else 0.0,
            "listeners": {
                n: {"uri": lst.uri, "state": lst.state, "delay_ms": lst.delay_s * 1000}
                for n, lst in self.listeners.items()
            },
        }

    async def c_info(self, request: web.Request) -> web.Response:
        return self._ok(self.info())

    async def c_stats(self, request: web.Request) -> web.Response:
        return self._ok({"requests": dict(self.counters), "total": sum(self.counters.values())})

    async def c_stats_reset(self, request: web.Request) -> web.Response:
        self.counters.clear()
        return self._ok({})

    async def c_reset(self, request: web.Request) -> web.Response:
        self.faults.reset()
        self.counters.clear()
        self.request_log.clear()
        self.listed = True
        self.notifications.reset_faults()
        for name, lst in self.listeners.items():
            if lst.state != "up":
                await self.set_listener(name, "up")
        return self._ok({})

    async def c_faults_get(self, request: web.Request) -> web.Response:
        base = self.faults.base.to_dict() if self.faults.base is not None else None
        return self._ok({"seed": self.faults.seed, "rules": [r.to_dict() for r in self.faults.rules], "base": base})

    async def c_faults_set(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        rules = self._mutate(lambda: [FaultRule.from_dict(r) for r in body.get("rules", [])])
        self.faults.configure(rules, body.get("seed"))
        return self._ok({"rules": len(rules)})

    async def c_faults_add(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self.faults.add(self._mutate(lambda: FaultRule.from_dict(body)))
        return self._ok({"rules": len(self.faults.rules)})

    async def c_faults_clear(self, request: web.Request) -> web.Response:
        self.faults.reset()
        return self._ok({})

    async def c_latency(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        try:
            latency = float(b.get("latency_ms", 0))
            jitter = float(b["jitter_ms"]) if b.get("jitter_ms") is not None else latency / 10
        except (TypeError, ValueError):
            raise web.HTTPBadRequest(text="latency_ms and jitter_ms must be numbers") from None
        self._mutate(lambda: self.faults.set_base_latency(latency, jitter))
        return self._ok({"latency_ms": latency, "jitter_ms": jitter if latency else 0.0})

    async def c_item_add(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        rk, events = self._mutate(
            lambda: self.library.add_item(
                int(b["section"]),
                type=b.get("type"),
                parent=b.get("parent"),
                index=b.get("index"),
                fields=b.get("fields"),
            )
        )
        self.publish(events)
        return self._ok({"ratingKey": str(rk)}, 201)

    async def c_items_bulk(self, request: web.Request) -> web.Response:
        """Add ``count`` generated items at once (a bulk import) and announce them as one burst."""
        b = await self._body(request)
        try:
            section, count = int(b["section"]), int(b["count"])
        except (KeyError, TypeError, ValueError):
            raise web.HTTPBadRequest(text="section and count must be integers") from None
        if not 0 <= count <= 1_000_000:
            raise web.HTTPBadRequest(text="count must be between 0 and 1000000")
        fields = b.get("fields") or {}
        if not isinstance(fields, dict):
            raise web.HTTPBadRequest(text="fields must be an object")
        parent = b.get("parent")

        def add_all() -> tuple[list[str], list[Event]]:
            keys: list[str] = []
            events: list[Event] = []
            for i in range(1, count + 1):
                item_fields = dict(fields)
                if isinstance(fields.get("title"), str):
                    item_fields["title"] = f"{fields['title']} {i}"
                rk, evs = self.library.add_item(
                    section,
                    type=b.get("type"),
                    parent=int(parent) if parent is not None else None,
                    fields=item_fields or None,
                )
                keys.append(str(rk))
                events += evs
            return keys, events

        keys, events = self._mutate(add_all)
        self.publish(events)
        return self._ok({"ratingKeys": keys}, 201)

    async def c_item_get(self, request: web.Request) -> web.Response:
        rk = self._int(request, "rk")
        return self._ok(self._mutate(lambda: self.library.render(rk, include_chapters=True)))

    async def c_item_change(self, request: web.Request) -> web.Response:
        rk = self._int(request, "rk")
        b = await self._body(request)
        self.publish(self._mutate(lambda: self.library.change_item(rk, b.get("fields", b))))
        return self._ok(self.library.render(rk, include_chapters=True))

    async def c_item_delete(self, request: web.Request) -> web.Response:
        rk = self._int(request, "rk")
        self.publish(self._mutate(lambda: self.library.delete_item(rk)))
        return self._ok({})

    async def c_item_move(self, request: web.Request) -> web.Response:
        rk = self._int(request, "rk")
        b = await self._body(request)
        self.publish(self._mutate(lambda: self.library.move_item(rk, int(b["parent"]), b.get("index"))))
        return self._ok(self.library.render(rk, include_chapters=True))

    async def c_item_media(self, request: web.Request) -> web.Response:
        rk = self._int(request, "rk")
        b = await self._body(request)
        self.publish(self._mutate(lambda: self.library.add_media(rk, file=b.get("file"), size=b.get("size"))))
        return self._ok(self.library.render(rk, include_chapters=True))

    async def c_item_replace(self, request: web.Request) -> web.Response:
        rk = self._int(request, "rk")
        b = await self._body(request)
        self.publish(
            self._mutate(
                lambda: self.library.replace_file(
                    rk,
                    media_index=int(b.get("media_index", 0)),
                    part_index=int(b.get("part_index", 0)),
                    file=b.get("file"),
                    size=b.get("size"),
                )
            )
        )
        return self._ok(self.library.render(rk, include_chapters=True))

    async def c_section_add(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        spec = self._mutate(lambda: SectionSpec.from_dict(b))
        sec = self.library.add_section(spec)
        return self._ok(sec.to_plex() | {"counts": self.library.section_counts(sec.key)}, 201)

    async def c_section_remove(self, request: web.Request) -> web.Response:
        key = self._int(request, "key")
        self.publish(self._mutate(lambda: self.library.remove_section(key)))
        return self._ok({})

    async def c_token_add(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        token = str(b.get("token") or uuid.uuid4().hex)
        self.tokens.add(token)
        return self._ok({"token": token}, 201)

    async def c_token_revoke(self, request: web.Request) -> web.Response:
        self.tokens.discard(request.match_info["token"])
        await self.notifications.close_all()
        return self._ok({})

    async def c_notifications(self, request: web.Request) -> web.Response:
        return self._ok(self.notifications.status())

    async def c_notifications_drop(self, request: web.Request) -> web.Response:
        return self._ok({"dropped": self.notifications.drop()})

    async def c_notifications_silence(self, request: web.Request) -> web.Response:
        silent = (await self._body(request)).get("silent", True)
        if not isinstance(silent, bool):
            raise web.HTTPBadRequest(text="silent must be true or false")
        self.notifications.silent = silent
        return self._ok(self.notifications.status())

    async def c_notifications_skip(self, request: web.Request) -> web.Response:
        count = (await self._body(request)).get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise web.HTTPBadRequest(text="count must be a non-negative integer")
        self.notifications.skip = count
        return self._ok(self.notifications.status())

    async def c_notifications_refuse(self, request: web.Request) -> web.Response:
        status = (await self._body(request)).get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599):
            raise web.HTTPBadRequest(text="status must be an HTTP error status (400-599) or null")
        self.notifications.refusing = status
        return self._ok(self.notifications.status())

    async def c_pins(self, request: web.Request) -> web.Response:
        now = time.time()
        return self._ok([p.to_json(now) | {"polls": p.polls} for p in self.plextv.pins.values()])

    async def c_pin_approve(self, request: web.Request) -> web.Response:
        pid = self._int(request, "pin_id")
        b = await self._body(request)
        if pid not in self.plextv.pins:
            raise web.HTTPNotFound(text=f"no pin {pid}")
        pin = self.plextv.approve(pid, b.get("token"))
        if pin.auth_token:
            self.tokens.add(pin.auth_token)
        return self._ok(pin.to_json(time.time()))

    async def c_pin_approve_code(self, request: web.Request) -> web.Response:
        """Approve the live PIN with the code `plexsync login` shows (people see codes, not PIN ids)."""
        code = request.match_info["code"]
        pin = self.plextv.by_code(code)
        if pin is None:
            raise web.HTTPNotFound(text=f"no live pin with code {code[:32]!r}")
        self.plextv.approve(pin.id)
        if pin.auth_token:
            self.tokens.add(pin.auth_token)
        return self._ok(pin.to_json(time.time()))

    async def c_approval_page(self, request: web.Request) -> web.Response:
        return web.Response(text=APPROVAL_PAGE, content_type="text/html")

    async def c_pin_expire(self, request: web.Request) -> web.Response:
        pid = self._int(request, "pin_id")
        if pid not in self.plextv.pins:
            raise web.HTTPNotFound(text=f"no pin {pid}")
        self.plextv.pins[pid].expired = True
        return self._ok({})

    async def c_pin_auto(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        after = b.get("after_polls")
        self.plextv.auto_approve_after = int(after) if after is not None else None
        if "ttl" in b:
            self.plextv.pin_ttl = int(b["ttl"])
        return self._ok({"after_polls": self.plextv.auto_approve_after, "ttl": self.plextv.pin_ttl})

    async def c_connection(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.listeners:
            raise web.HTTPNotFound(text=f"no connection {name}; have {sorted(self.listeners)}")
        b = await self._body(request)
        try:
            lst = await self.set_listener(name, str(b.get("state", "up")), float(b.get("delay_ms", 0)))
        except ValueError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        return self._ok({"name": lst.name, "uri": lst.uri, "state": lst.state})

    async def c_resources_hidden(self, request: web.Request) -> web.Response:
        b = await self._body(request)
        hidden = b.get("hidden", True)
        if not isinstance(hidden, bool):
            raise web.HTTPBadRequest(text="hidden must be true or false")
        self.listed = not hidden
        return self._ok({"hidden": hidden})

    def received(self, limit: int | None = None, path_prefix: str = "") -> list[dict[str, Any]]:
        """The last ``limit`` requests (oldest first) with their headers, minus every token."""
        entries = list(self.request_log)
        if path_prefix:
            entries = [e for e in entries if URL(e[4]).path.startswith(path_prefix)]
        if limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        out = []
        for ts, listener, method, template, raw_path, headers in entries:
            url = URL(raw_path)
            token_in_query = any(k.lower() == "x-plex-token" for k in url.query)
            out.append(
                {
                    "time": ts,
                    "listener": listener,
                    "method": method,
                    "template": template,
                    "path": url.path,
                    "query": {k: (REDACTED if k.lower() == "x-plex-token" else v) for k, v in url.query.items()},
                    "headers": {str(k): v for k, v in headers.items() if k.lower() not in SECRET_HEADERS},
                    "token_in_header": "X-Plex-Token" in headers,
                    "token_in_query": token_in_query,
                }
            )
        return out

    async def c_requests(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit")
        try:
            limit = int(raw) if raw not in (None, "") else None
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer") from None
        entries = self.received(limit, request.query.get("path_prefix", ""))
        return self._ok({"seen": self.requests_seen, "kept": len(self.request_log), "requests": entries})

    async def c_requests_clear(self, request: web.Request) -> web.Response:
        self.request_log.clear()
        return self._ok({})


async def run_forever(fp: FakePlex, ready: Callable[[FakePlex], None] | None = None) -> None:
    """Serve until cancelled (SIGINT/SIGTERM in the CLI)."""
    async with fp:
        if ready is not None:
            ready(fp)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
