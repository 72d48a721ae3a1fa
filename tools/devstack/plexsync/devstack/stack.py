"""The whole development stack, recorded in .dev/stack.json so `up` is idempotent and `down` stops it all."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from plexsync.common.tls import PLAIN_TCP_ENV, CertPair, DevCertificateAuthority, tls_env
from plexsync.devstack import infra
from plexsync.devstack.process import ChildProcess, start_fakeplex, start_service

# Services in start order (each needs the ones before it).
SERVICES = ["catalog", "auth", "scanner", "scheduler"]
# The callers the dev stack's services accept and their roles (plexsync.common.access); `reader` is what another
# system would be given.
IDENTITIES = {"scanner": "scanner", "scheduler": "scheduler", "cli": "admin", "admin": "admin", "reader": "reader"}
FAKEPLEX_TOKEN = "fakeplex-server-token"
# fakeplex plays plex.tv too: it approves a `plexsync login` PIN by itself on this poll (about 2 s after the CLI
# starts waiting; auth polls every second), since nobody can approve it on the real app.plex.tv.
PIN_AUTO_APPROVE_AFTER_POLLS = 3
# Where auth sends people to approve a PIN (PLEXSYNC_PLEX_APP_URL + "/auth#?code=..."): fakeplex's approval page.
FAKEPLEX_APP_PATH = "/__fakeplex"
# What a service is wired to (its peers, PostgreSQL, NATS, plex.tv, TLS); a change restarts a running service.
_WIRING_PREFIXES = ("PLEXSYNC_PLEX_", "PLEXSYNC_TLS_", "PLEXSYNC_GRPC_")


def login_hint(fakeplex_url: str) -> str:
    """How `plexsync login` gets approved in the dev stack, where plex.tv is fakeplex (what `make up` prints)."""
    return (
        f"plexsync login: plex.tv is fakeplex here, and it approves the PIN by itself within a few seconds; "
        f"to approve at once, open the link login prints (fakeplex's page) or run: "
        f"curl -X POST {fakeplex_url}{FAKEPLEX_APP_PATH}/pins/by-code/<CODE>/approve"
    )


def service_exists(name: str) -> bool:
    """Whether `python -m plexsync.<name>` exists yet (services land one issue at a time)."""
    try:
        return importlib.util.find_spec(f"plexsync.{name}.__main__") is not None
    except ModuleNotFoundError:
        return False


@dataclass
class StackState:
    """Everything `make up` started, with the secrets and addresses clients need."""

    database_url: str = ""
    nats_url: str = ""
    postgres_pid: int = 0
    nats_pid: int = 0
    owns_postgres: bool = False
    owns_nats: bool = False
    tokens: dict[str, str] = field(default_factory=dict)
    token_key: str = ""
    addresses: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    fakeplex_url: str = ""
    # Ports kept from one `up` to the next (reused while free), so a Plex connection auth stored, NATS_URL and the
    # exported service addresses stay true after a restart: "fakeplex", "fakeplex-relay", "nats", each service's.
    ports: dict[str, int] = field(default_factory=dict)
    # The wiring (`wiring_of`) each running service was started with.
    wiring: dict[str, dict[str, str]] = field(default_factory=dict)
    # Set by `up --tls`: every service serves TLS and requires client certificates (mTLS) from a dev CA here.
    tls_dir: str = ""

    def tls_env(self, identity: str) -> dict[str, str]:
        """PLEXSYNC_TLS_* for `identity` (its certificate from `tls_dir`), or plain TCP said explicitly."""
        if not self.tls_dir:
            return dict(PLAIN_TCP_ENV)
        tls = Path(self.tls_dir)
        return tls_env(tls / "ca.pem", CertPair(tls / f"{identity}.pem", tls / f"{identity}.key"), client_auth=True)

    def service_env(self, identity: str, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a process acting as `identity` (a service, the CLI, a test), plus `extra_env`."""
        env = {
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "PLEXSYNC_SERVICE_TOKENS": ",".join(
                f"{who}@{IDENTITIES.get(who, 'reader')}:{tok}" for who, tok in self.tokens.items()
            ),
            "PLEXSYNC_SERVICE_TOKEN": self.tokens.get(identity, ""),
            "PLEXSYNC_TOKEN_KEYS": self.token_key,
            "PLEXSYNC_LOG_FORMAT": os.environ.get("PLEXSYNC_LOG_FORMAT", "json"),
        }
        for name, address in self.addresses.items():
            env[f"PLEXSYNC_{name.upper()}_ADDR"] = address
        if self.fakeplex_url:
            env["PLEXSYNC_PLEX_TV_URL"] = self.fakeplex_url
            env["PLEXSYNC_PLEX_APP_URL"] = self.fakeplex_url + FAKEPLEX_APP_PATH
        env.update(self.tls_env(identity))
        env.update(extra_env or {})
        return env

    def wiring_of(self, name: str) -> dict[str, str]:
        """The part of service `name`'s environment naming what it talks to (no secrets): when it changes, the
        running process still talks to the old PostgreSQL, NATS, peer or plex.tv and must be restarted."""
        own = f"PLEXSYNC_{name.upper()}_ADDR"
        return {
            key: value
            for key, value in self.service_env(name).items()
            if key in ("DATABASE_URL", "NATS_URL")
            or (key.endswith("_ADDR") and key != own)
            or key.startswith(_WIRING_PREFIXES)
        }


class Stack:
    """Start, reuse, inspect and stop the stack whose state lives in `state_dir`."""

    def __init__(self, state_dir: Path = infra.DEV_DIR) -> None:
        self.dir = state_dir
        self.state_file = state_dir / "stack.json"
        self.log_dir = state_dir / "logs"
        # What the last `up` restarted and why (for `make up` to say), and the infrastructure it (re)started.
        self.notes: list[str] = []
        self._started_infra: list[str] = []

    def load(self) -> StackState | None:
        if not self.state_file.exists():
            return None
        return StackState(**json.loads(self.state_file.read_text()))

    def save(self, state: StackState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(state), indent=2))
        self.state_file.chmod(0o600)

    def ensure_infra(self, state: StackState) -> StackState:
        """PostgreSQL and NATS: from DATABASE_URL / NATS_URL if set, else embedded (reused if running)."""
        if os.environ.get("DATABASE_URL"):
            state.database_url, state.owns_postgres = os.environ["DATABASE_URL"], False
        elif not (state.owns_postgres and infra.pid_alive(state.postgres_pid)):
            state.database_url, state.postgres_pid = infra.start_postgres(self.dir / "pg")
            state.owns_postgres = True
            self._started_infra.append("PostgreSQL")
        if os.environ.get("NATS_URL"):
            state.nats_url, state.owns_nats = os.environ["NATS_URL"], False
        elif not (state.owns_nats and infra.pid_alive(state.nats_pid)):
            self.log_dir.mkdir(parents=True, exist_ok=True)
            state.nats_url, state.nats_pid = infra.start_nats(
                self.dir / "nats", self.log_dir / "nats.log", port=state.ports.get("nats", 0)
            )
            state.ports["nats"] = int(state.nats_url.rsplit(":", 1)[1])
            state.owns_nats = True
            self._started_infra.append("NATS")
        if not state.tokens:
            state.tokens = {who: secrets.token_urlsafe(24) for who in IDENTITIES}
        if not state.token_key:
            state.token_key = "dev1:" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.save(state)
        return state

    def up(
        self,
        *,
        fakeplex_args: list[str] | None = None,
        services: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        tls: bool = False,
    ) -> StackState:
        """Start whatever is not already running; never start twins. `extra_env` goes to the services started;
        `tls` runs them on mutual TLS with certificates generated into ``<dir>/tls`` (else plain TCP).

        Every piece keeps its port from the last `up` while that port is free. A running service whose
        PostgreSQL or NATS was just started again (the old one had died), or whose wiring changed (a peer or
        fakeplex on another port), is restarted, since it would keep talking to the dead one; `notes` says so."""
        self.notes, self._started_infra = [], []
        state = self.ensure_infra(self.load() or StackState())
        self._ensure_tls(state, tls)
        self._ensure_fakeplex(state, fakeplex_args or [])
        wanted = [name for name in (services if services is not None else SERVICES) if service_exists(name)]
        for name in SERVICES:  # every peer's address is known from the start, even of a service started later
            if service_exists(name) and not infra.pid_alive(state.pids.get(name, 0)):
                state.addresses[name] = f"127.0.0.1:{self._port(state, name)}"
        self.save(state)
        for name in SERVICES:
            pid = state.pids.get(name, 0)
            if infra.pid_alive(pid):
                why = self._restart_reason(state, name)
                if not why:
                    continue
                ChildProcess(name, pid, self.log_dir / f"{name}.log").stop()
                self.notes.append(f"restarted {name}: {why}")
            elif name not in wanted:
                continue
            port = int(state.addresses[name].rsplit(":", 1)[1])
            child = start_service(name, port, state.service_env(name, extra_env), self.log_dir)
            state.pids[name] = child.pid
            state.wiring[name] = state.wiring_of(name)
            self.save(state)
        return state

    def _port(self, state: StackState, key: str, hosts: tuple[str, ...] = ("127.0.0.1",)) -> int:
        """`key`'s port of the last `up` when it is free on `hosts`, else a new free one (recorded)."""
        port = state.ports.get(key, 0)
        if not infra.port_free(port, hosts):
            port = infra.free_port()
        state.ports[key] = port
        return port

    def _restart_reason(self, state: StackState, name: str) -> str:
        """Why running service `name` must be restarted ("" when it need not)."""
        if self._started_infra:
            return f"{' and '.join(self._started_infra)} had stopped and was started again; it was still on the old one"
        before = state.wiring.get(name)
        if before is None:  # started by an older devstack that did not record it: leave it alone
            return ""
        now = state.wiring_of(name)
        changed = sorted(key for key in now.keys() & before.keys() if now[key] != before[key])
        return f"{', '.join(changed)} changed" if changed else ""

    def _ensure_tls(self, state: StackState, tls: bool) -> None:
        running = [name for name in SERVICES if infra.pid_alive(state.pids.get(name, 0))]
        if running and bool(state.tls_dir) != tls:
            now, wanted = ("TLS", "plain TCP") if state.tls_dir else ("plain TCP", "TLS")
            raise RuntimeError(f"the stack already runs on {now} ({', '.join(running)}); `make down` before {wanted}")
        if not tls:
            state.tls_dir = ""
            return
        ca = DevCertificateAuthority(self.dir / "tls")
        for identity in [*SERVICES, *IDENTITIES]:  # each service's server certificate, each caller's client one
            if not (ca.directory / f"{identity}.pem").exists():
                ca.issue(identity)
        state.tls_dir = str(ca.directory)
        self.save(state)

    def _ensure_fakeplex(self, state: StackState, extra_args: list[str]) -> None:
        pid = state.pids.get("fakeplex", 0)
        if pid and infra.pid_alive(pid):
            return
        before = state.fakeplex_url
        # The `remote` connection is the same port on 127.0.0.2: both must be free to keep the connections.
        port = self._port(state, "fakeplex", ("127.0.0.1", "127.0.0.2"))
        relay = self._port(state, "fakeplex-relay")
        args = [
            *("--host", "127.0.0.1", "--port", str(port), "--relay-listen", f"127.0.0.1:{relay}"),
            *("--token", FAKEPLEX_TOKEN, "--pin-auto-approve-after", str(PIN_AUTO_APPROVE_AFTER_POLLS), *extra_args),
        ]
        child, info = start_fakeplex(args, self.log_dir / "fakeplex.log")
        state.pids["fakeplex"] = child.pid
        state.fakeplex_url = str(info["url"])
        if before and before != state.fakeplex_url:
            self.notes.append(
                f"fakeplex moved from {before} to {state.fakeplex_url} (its port was taken): "
                "run `plexsync servers discover` so auth learns the new connections"
            )
        self.save(state)

    def down(self) -> list[str]:
        """Stop everything this stack started (services first, then NATS and PostgreSQL)."""
        state = self.load()
        if state is None:
            return []
        stopped: list[str] = []
        for name in [*reversed(SERVICES), "fakeplex"]:
            pid = state.pids.pop(name, 0)
            if pid and infra.pid_alive(pid):
                ChildProcess(name, pid, self.log_dir / f"{name}.log").stop()
                stopped.append(name)
        if state.owns_nats and infra.pid_alive(state.nats_pid):
            infra.terminate(state.nats_pid)
            stopped.append("nats")
        if state.owns_postgres:
            infra.stop_postgres(self.dir / "pg")
            stopped.append("postgres")
        state.addresses.clear()
        state.wiring.clear()
        state.nats_pid = state.postgres_pid = 0
        self.save(state)
        return stopped

    def status(self) -> dict[str, str]:
        state = self.load()
        if state is None:
            return {}
        report: dict[str, str] = {}
        if state.owns_postgres:
            report["postgres"] = "running" if infra.pid_alive(state.postgres_pid) else "stopped"
        if state.owns_nats:
            report["nats"] = "running" if infra.pid_alive(state.nats_pid) else "stopped"
        for name, pid in state.pids.items():
            report[name] = (
                f"running (pid {pid}, {state.addresses.get(name, state.fakeplex_url)})"
                if (infra.pid_alive(pid))
                else "stopped"
            )
        return report
