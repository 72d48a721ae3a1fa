"""The whole development stack, recorded in .dev/stack.json so `up` is idempotent and `down` stops it all."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from plexsync.devstack import infra
from plexsync.devstack.process import ChildProcess, start_fakeplex, start_service

# Services in start order (each needs the ones before it).
SERVICES = ["catalog", "auth", "scanner", "scheduler"]
IDENTITIES = ["auth", "catalog", "scanner", "scheduler", "cli", "admin"]
FAKEPLEX_TOKEN = "fakeplex-server-token"


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

    def service_env(self, identity: str, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a process acting as `identity` (a service, the CLI, a test), plus `extra_env`."""
        env = {
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "PLEXSYNC_SERVICE_TOKENS": ",".join(f"{who}:{tok}" for who, tok in self.tokens.items()),
            "PLEXSYNC_SERVICE_TOKEN": self.tokens.get(identity, ""),
            "PLEXSYNC_TOKEN_KEYS": self.token_key,
            "PLEXSYNC_LOG_FORMAT": os.environ.get("PLEXSYNC_LOG_FORMAT", "json"),
        }
        for name, address in self.addresses.items():
            env[f"PLEXSYNC_{name.upper()}_ADDR"] = address
        if self.fakeplex_url:
            env["PLEXSYNC_PLEX_TV_URL"] = self.fakeplex_url
        env.update(extra_env or {})
        return env


class Stack:
    """Start, reuse, inspect and stop the stack whose state lives in `state_dir`."""

    def __init__(self, state_dir: Path = infra.DEV_DIR) -> None:
        self.dir = state_dir
        self.state_file = state_dir / "stack.json"
        self.log_dir = state_dir / "logs"

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
        if os.environ.get("NATS_URL"):
            state.nats_url, state.owns_nats = os.environ["NATS_URL"], False
        elif not (state.owns_nats and infra.pid_alive(state.nats_pid)):
            self.log_dir.mkdir(parents=True, exist_ok=True)
            state.nats_url, state.nats_pid = infra.start_nats(self.dir / "nats", self.log_dir / "nats.log")
            state.owns_nats = True
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
    ) -> StackState:
        """Start whatever is not already running; never start twins. `extra_env` goes to the services started."""
        state = self.ensure_infra(self.load() or StackState())
        self._ensure_fakeplex(state, fakeplex_args or [])
        for name in services if services is not None else SERVICES:
            if not service_exists(name):
                continue
            pid = state.pids.get(name, 0)
            if pid and infra.pid_alive(pid):
                continue
            port = infra.free_port()
            state.addresses[name] = f"127.0.0.1:{port}"
            self.save(state)
            child = start_service(name, port, state.service_env(name, extra_env), self.log_dir)
            state.pids[name] = child.pid
            self.save(state)
        return state

    def _ensure_fakeplex(self, state: StackState, extra_args: list[str]) -> None:
        pid = state.pids.get("fakeplex", 0)
        if pid and infra.pid_alive(pid):
            return
        args = ["--host", "127.0.0.1", "--port", "0", "--token", FAKEPLEX_TOKEN, *extra_args]
        child, info = start_fakeplex(args, self.log_dir / "fakeplex.log")
        state.pids["fakeplex"] = child.pid
        state.fakeplex_url = str(info["url"])
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
