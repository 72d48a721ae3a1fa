"""Typed client for fakeplex's control API (``/__fakeplex/...``), for tests and benchmarks.

Works against an in-process ``FakePlex`` or a subprocess alike; it needs no Plex token.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from plexsync.fakeplex.faults import FaultKind, MalformedVariant


class FakePlexControl:
    """``async with FakePlexControl(url) as ctl: await ctl.change(rk, title="New")``."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/__fakeplex", timeout=timeout)

    async def __aenter__(self) -> FakePlexControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        resp = await self._client.request(method, path, json=json)
        if resp.status_code >= 400:
            raise FakePlexControlError(resp.status_code, resp.text)
        return resp.json()

    # info and counters
    async def info(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/info"))

    async def stats(self) -> dict[str, int]:
        """Requests served per ``METHOD /path/{template}`` since start or the last reset."""
        return dict((await self._call("GET", "/stats"))["requests"])

    async def total_requests(self) -> int:
        return int((await self._call("GET", "/stats"))["total"])

    async def reset_stats(self) -> None:
        await self._call("POST", "/stats/reset")

    async def reset(self) -> None:
        """Clear faults (the notification stream's too), counters and the request log, list the server again and
        bring every connection up. Open notification connections stay."""
        await self._call("POST", "/reset")

    # library mutations
    async def add_item(
        self,
        section: int,
        *,
        type: str | None = None,
        parent: int | str | None = None,
        index: int | None = None,
        **fields: Any,
    ) -> str:
        body: dict[str, Any] = {"section": section, "type": type, "index": index, "fields": fields or None}
        if parent is not None:
            body["parent"] = int(parent)
        return str((await self._call("POST", "/items", body))["ratingKey"])

    async def add_items_bulk(
        self, section: int, count: int, *, type: str | None = None, parent: int | str | None = None, **fields: Any
    ) -> list[str]:
        """Add ``count`` generated items at once (a bulk import; a ``title`` becomes ``"<title> 1"``, ``"<title> 2"``
        ...), announced as one burst: one activity, the timeline entries grouped up to 100 per message. Returns
        their rating keys."""
        body: dict[str, Any] = {"section": section, "count": count, "type": type, "fields": fields or None}
        if parent is not None:
            body["parent"] = int(parent)
        return [str(rk) for rk in (await self._call("POST", "/items/bulk", body))["ratingKeys"]]

    async def item(self, rating_key: int | str) -> dict[str, Any]:
        return dict(await self._call("GET", f"/items/{rating_key}"))

    async def change(self, rating_key: int | str, **fields: Any) -> dict[str, Any]:
        """Set metadata fields (``title=...``, ``Genre=[{"tag": "Drama"}]``); None removes a field."""
        return dict(await self._call("PATCH", f"/items/{rating_key}", {"fields": fields}))

    async def delete(self, rating_key: int | str) -> None:
        await self._call("DELETE", f"/items/{rating_key}")

    async def move(self, rating_key: int | str, parent: int | str, index: int | None = None) -> dict[str, Any]:
        return dict(await self._call("POST", f"/items/{rating_key}/move", {"parent": int(parent), "index": index}))

    async def add_media(
        self, rating_key: int | str, *, file: str | None = None, size: int | None = None
    ) -> dict[str, Any]:
        return dict(await self._call("POST", f"/items/{rating_key}/media", {"file": file, "size": size}))

    async def replace_file(
        self,
        rating_key: int | str,
        *,
        media_index: int = 0,
        part_index: int = 0,
        file: str | None = None,
        size: int | None = None,
    ) -> dict[str, Any]:
        body = {"media_index": media_index, "part_index": part_index, "file": file, "size": size}
        return dict(await self._call("POST", f"/items/{rating_key}/replace-file", body))

    # sections
    async def add_section(
        self,
        kind: Literal["movie", "show", "other"],
        title: str | None = None,
        *,
        count: int = 0,
        seasons: int = 0,
        episodes: int = 0,
        collections: int = 0,
    ) -> dict[str, Any]:
        """Add a library section with ``count`` generated movies/shows/videos (``seasons`` per show, ``episodes``
        per season), as a Plex user adding a library. Returns it as ``/library/sections`` lists it, plus its
        ``counts`` by type; ``int(section["key"])`` is its key."""
        body = {"kind": kind, "title": title, "count": count, "seasons": seasons, "episodes": episodes,
                "collections": collections}  # fmt: skip
        return dict(await self._call("POST", "/sections", body))

    async def remove_section(self, key: int | str) -> None:
        """Delete a section and all its items (a library removed in Plex)."""
        await self._call("DELETE", f"/sections/{key}")

    # tokens and pins
    async def add_token(self, token: str | None = None) -> str:
        return str((await self._call("POST", "/tokens", {"token": token}))["token"])

    async def revoke_token(self, token: str) -> None:
        await self._call("DELETE", f"/tokens/{token}")

    async def approve_pin(self, pin_id: int, token: str | None = None) -> dict[str, Any]:
        return dict(await self._call("POST", f"/pins/{pin_id}/approve", {"token": token}))

    async def approve_pin_code(self, code: str) -> dict[str, Any]:
        """Approve the live PIN showing `code` (what `plexsync login` prints)."""
        return dict(await self._call("POST", f"/pins/by-code/{code}/approve"))

    async def expire_pin(self, pin_id: int) -> None:
        await self._call("POST", f"/pins/{pin_id}/expire")

    async def auto_approve_pins(self, after_polls: int | None, *, ttl: int | None = None) -> None:
        """Approve every PIN on its Nth poll (None turns it off); ``ttl`` sets new PINs' lifetime."""
        body: dict[str, Any] = {"after_polls": after_polls}
        if ttl is not None:
            body["ttl"] = ttl
        await self._call("POST", "/pins/auto-approve", body)

    async def pins(self) -> list[dict[str, Any]]:
        return list(await self._call("GET", "/pins"))

    # faults and connections
    async def set_faults(self, rules: list[dict[str, Any]], *, seed: int | None = None) -> None:
        await self._call("PUT", "/faults", {"rules": rules, "seed": seed})

    async def add_fault(
        self,
        kind: FaultKind,
        *,
        probability: float = 1.0,
        path_prefix: str = "",
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        status: int = 500,
        retry_after: int = 1,
        times: int | None = None,
        variant: MalformedVariant = "",
    ) -> None:
        """Add a fault rule (see faults.FaultRule); ``variant`` picks a ``malformed`` answer's corruption."""
        rule = {
            "kind": kind,
            "probability": probability,
            "path_prefix": path_prefix,
            "latency_ms": latency_ms,
            "jitter_ms": jitter_ms,
            "status": status,
            "retry_after": retry_after,
            "times": times,
            "variant": variant,
        }
        await self._call("POST", "/faults", rule)

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/faults")

    async def set_latency(self, latency_ms: float, *, jitter_ms: float | None = None) -> None:
        """The base latency of every Plex request (``--latency-ms``; jitter defaults to 10%); 0 turns it off.
        Unlike fault rules it survives ``reset()`` and ``clear_faults()``."""
        await self._call("PUT", "/latency", {"latency_ms": latency_ms, "jitter_ms": jitter_ms})

    async def set_listed(self, listed: bool) -> None:
        """Put the server in (True) or take it out of (False) plex.tv's ``/api/v2/resources`` list."""
        await self._call("POST", "/resources/hidden", {"hidden": not listed})

    # the notification stream (websockets and EventSource)
    async def notifications_status(self) -> dict[str, Any]:
        """``websockets``, ``eventsources`` (open now), ``sent`` (messages written, one per connection),
        ``skipped``, ``silent``, ``refusing`` (status or None), ``connections_total`` (accepted since start),
        ``published``, ``lost`` (published while silent), ``overflowed`` (slow clients dropped)."""
        return dict(await self._call("GET", "/notifications"))

    async def notifications_drop(self) -> int:
        """Abort every notification connection with no close frame (a server restart). How many were open."""
        return int((await self._call("POST", "/notifications/drop"))["dropped"])

    async def notifications_silence(self, silent: bool = True) -> None:
        """While silent nothing is sent, websocket pings go unanswered and EventSource pings stop (a hung server);
        new connections are accepted but silent too, and what is published meanwhile is lost."""
        await self._call("POST", "/notifications/silence", {"silent": silent})

    async def notifications_skip(self, count: int) -> None:
        """The next ``count`` published messages (NotificationContainers) go to no connection."""
        await self._call("POST", "/notifications/skip", {"count": count})

    async def notifications_refuse(self, status: int | None) -> None:
        """Answer new notification connections with HTTP ``status`` (None accepts them again)."""
        await self._call("POST", "/notifications/refuse", {"status": status})

    # what fakeplex received
    async def requests(self, limit: int | None = None, *, path_prefix: str = "") -> list[dict[str, Any]]:
        """The last ``limit`` Plex/plex.tv requests (oldest first; control calls are not recorded).

        Each: ``time``, ``listener`` (``local``, ``remote``, ``relay``, ``https``, ``control``...), ``method``,
        ``template`` (route, e.g. ``/library/metadata/{ids}``), ``path``, ``query`` (``X-Plex-Token`` values
        replaced), ``headers`` (as sent, minus X-Plex-Token, Authorization, Proxy-Authorization, Cookie),
        ``token_in_header`` and ``token_in_query``. The log is bounded (``--request-log-size``)."""
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if path_prefix:
            params["path_prefix"] = path_prefix
        resp = await self._client.get("/requests", params=params)
        if resp.status_code >= 400:
            raise FakePlexControlError(resp.status_code, resp.text)
        return list(resp.json()["requests"])

    async def clear_requests(self) -> None:
        await self._call("DELETE", "/requests")

    async def set_connection(
        self, name: str, state: Literal["up", "down", "slow"], *, delay_ms: float = 0.0
    ) -> dict[str, Any]:
        """``name`` is ``local``, ``remote``, ``relay``, ``https`` or ``extraN``. Control through the ``control``
        listener (``--control-listen``; info's ``control_url``) to take every connection down."""
        return dict(await self._call("POST", f"/connections/{name}", {"state": state, "delay_ms": delay_ms}))


class FakePlexControlError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"fakeplex control call failed: {status} {text}")
        self.status = status
        self.text = text
