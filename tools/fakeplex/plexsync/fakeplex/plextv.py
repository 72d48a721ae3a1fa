"""plex.tv emulation: PIN login, the user, and the resources (servers + connections) list."""

from __future__ import annotations

import itertools
import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Pin:
    id: int
    code: str
    client_identifier: str
    strong: bool
    created_at: float
    expires_in: int
    auth_token: str | None = None
    polls: int = 0
    expired: bool = False

    @property
    def expires_at(self) -> float:
        return self.created_at + self.expires_in

    def is_expired(self, now: float) -> bool:
        return self.expired or now >= self.expires_at

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "code": self.code,
            "product": "plexsync",
            "trusted": False,
            "qr": f"https://plex.tv/api/v2/pins/qr/{self.code}",
            "clientIdentifier": self.client_identifier,
            "location": {
                "code": "DK",
                "european_union_member": True,
                "continent_code": "EU",
                "country": "Denmark",
                "city": "København",
                "time_zone": "Europe/Copenhagen",
                "postal_code": "1050",
                "in_privacy_restricted_country": False,
                "subdivisions": "Capital Region",
                "coordinates": "55.6759, 12.5655",
            },
            "expiresIn": max(0, int(self.expires_at - now)),
            "createdAt": _iso(self.created_at),
            "expiresAt": _iso(self.expires_at),
            "authToken": self.auth_token,
            "newRegistration": None,
        }


@dataclass(slots=True)
class PlexTvState:
    """Pins and account; ``auto_approve_after`` approves a PIN on its Nth poll (None = never)."""

    account_token: str
    pin_ttl: int = 1800
    auto_approve_after: int | None = None
    seed: int = 1
    pins: dict[int, Pin] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1_000_001))

    def create_pin(self, client_identifier: str, strong: bool) -> Pin:
        pid = next(self._ids)
        rng = random.Random(f"{self.seed}/pin/{pid}")
        alphabet = string.ascii_lowercase + string.digits if strong else string.ascii_uppercase + string.digits
        code = "".join(rng.choice(alphabet) for _ in range(25 if strong else 4))
        pin = Pin(pid, code, client_identifier, strong, time.time(), self.pin_ttl)
        self.pins[pid] = pin
        return pin

    def approve(self, pin_id: int, token: str | None = None) -> Pin:
        pin = self.pins[pin_id]
        pin.auth_token = token or self.account_token
        return pin

    def by_code(self, code: str) -> Pin | None:
        """The newest unexpired PIN showing `code` (what a person types or follows a link with), if any."""
        now = time.time()
        live = [p for p in self.pins.values() if p.code.lower() == code.strip().lower() and not p.is_expired(now)]
        return max(live, key=lambda p: p.id, default=None)

    def poll(self, pin_id: int) -> Pin | None:
        pin = self.pins.get(pin_id)
        if pin is None or pin.is_expired(time.time()):
            return None
        pin.polls += 1
        if pin.auth_token is None and self.auto_approve_after is not None and pin.polls >= self.auto_approve_after:
            pin.auth_token = self.account_token
        return pin


# fakeplex's stand-in for app.plex.tv/auth: auth's PIN link (PLEXSYNC_PLEX_APP_URL + "/auth#?...&code=CODE") opens it,
# and its button approves the PIN with that code, so a dev-stack login works from the link it prints.
APPROVAL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fakeplex: approve a plexsync login</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>fakeplex stands in for app.plex.tv</h1>
<p id="message">No PIN code in this link: open the link <code>plexsync login</code> printed.</p>
<button id="approve" hidden>Approve code <span id="code"></span></button>
<script>
const code = new URLSearchParams(location.hash.replace(/^#\\??/, "")).get("code");
const message = document.getElementById("message"), button = document.getElementById("approve");
if (code) {
  document.getElementById("code").textContent = code;
  message.textContent = "plexsync asks to sign in to this fake plex.tv account.";
  button.hidden = false;
  button.onclick = async () => {
    const reply = await fetch("pins/by-code/" + encodeURIComponent(code) + "/approve", {method: "POST"});
    message.textContent = reply.ok ? "Approved: plexsync login finishes within a second or two."
                                   : "fakeplex has no live PIN " + code + " (expired?): start the login again.";
    button.hidden = true;
  };
}
</script></body></html>
"""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"errors": [{"code": code, "message": message, "status": status}]}, status)


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def client_identifier(request: web.Request) -> str | None:
    return request.headers.get("X-Plex-Client-Identifier") or request.query.get("X-Plex-Client-Identifier")


class PlexTvHandlers:
    """aiohttp handlers for the plex.tv endpoints; tokens/resources come from the owning server."""

    def __init__(
        self,
        state: PlexTvState,
        token_ok: Callable[[web.Request], bool],
        resources: Callable[[bool, bool], list[dict[str, Any]]],
        user: Callable[[], dict[str, Any]],
    ) -> None:
        self.state = state
        self._token_ok = token_ok
        self._resources = resources
        self._user = user

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/v2/pins", self.create_pin),
            web.get("/api/v2/pins/{pin_id}", self.get_pin),
            web.get("/api/v2/resources", self.resources),
            web.get("/api/v2/user", self.user),
        ]

    async def create_pin(self, request: web.Request) -> web.Response:
        cid = client_identifier(request)
        if not cid:
            return _error(400, 1000, "X-Plex-Client-Identifier is missing")
        strong = request.query.get("strong", "false").lower() in ("1", "true")
        pin = self.state.create_pin(cid, strong)
        return _json(pin.to_json(time.time()), 201)

    async def get_pin(self, request: web.Request) -> web.Response:
        if not client_identifier(request):
            return _error(400, 1000, "X-Plex-Client-Identifier is missing")
        try:
            pin_id = int(request.match_info["pin_id"])
        except ValueError:
            return _error(404, 1020, "Code not found or expired")
        pin = self.state.poll(pin_id)
        if pin is None:
            return _error(404, 1020, "Code not found or expired")
        return _json(pin.to_json(time.time()))

    async def resources(self, request: web.Request) -> web.Response:
        if not self._token_ok(request):
            return _error(401, 1001, "User could not be authenticated")
        q = request.query
        return _json(self._resources(_flag(q.get("includeHttps")), _flag(q.get("includeRelay"))))

    async def user(self, request: web.Request) -> web.Response:
        if not self._token_ok(request):
            return _error(401, 1001, "User could not be authenticated")
        return _json(self._user())
