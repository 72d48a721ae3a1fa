"""Run a plexsync service (or fakeplex) as a real child process and wait until it is healthy."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from plexsync.common.tls import env_credentials
from plexsync.devstack.infra import pid_alive, terminate


class ServiceStartError(RuntimeError):
    """A child process exited or never became healthy; the message carries its log tail."""


def log_tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def wait_healthy(
    address: str,
    *,
    pid: int | None = None,
    log_file: Path | None = None,
    timeout: float = 60,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Poll grpc.health.v1 until the server reports SERVING (over TLS with `credentials`)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if pid is not None and not pid_alive(pid):
                tail = log_tail(log_file) if log_file else ""
                raise ServiceStartError(f"process {pid} serving {address} exited during start-up:\n{tail}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = exc.code().name if hasattr(exc, "code") else str(exc)
            time.sleep(0.1)
    tail = log_tail(log_file) if log_file else ""
    raise ServiceStartError(f"{address} not SERVING after {timeout}s (last: {last}):\n{tail}")


@dataclass
class ChildProcess:
    """A started child: its pid, its log file, and how to stop it gracefully."""

    name: str
    pid: int
    log_file: Path
    address: str = ""
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 15.0) -> None:
        terminate(self.pid, timeout=timeout)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=1)

    def alive(self) -> bool:
        return pid_alive(self.pid)


def spawn(name: str, args: list[str], env: dict[str, str], log_file: Path) -> ChildProcess:
    """Start `python <args>` in its own session with stdout/stderr to log_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    with open(log_file, "ab") as log:
        popen = subprocess.Popen(
            [sys.executable, *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return ChildProcess(name=name, pid=popen.pid, log_file=log_file, popen=popen)


def start_service(name: str, port: int, env: dict[str, str], log_dir: Path, timeout: float = 60) -> ChildProcess:
    """Start `python -m plexsync.<name>` on `port` and wait for SERVING."""
    child = spawn(
        name,
        ["-m", f"plexsync.{name}"],
        {
            **env,
            "PLEXSYNC_GRPC_PORT": str(port),
            "PLEXSYNC_GRPC_HOST": "127.0.0.1",
            "OTEL_SERVICE_NAME": name,
        },
        log_dir / f"{name}.log",
    )
    child.address = f"127.0.0.1:{port}"
    try:
        wait_healthy(
            child.address, pid=child.pid, log_file=child.log_file, timeout=timeout, credentials=env_credentials(env)
        )
    except ServiceStartError:
        child.stop(timeout=5)
        raise
    return child


def start_fakeplex(args: list[str], log_file: Path, *, timeout: float = 60) -> tuple[ChildProcess, dict[str, Any]]:
    """Start `python -m plexsync.fakeplex ARGS` and wait for its ready file; return it and what the file says.

    Use `--port 0` for a free port: the ready file tells the URL, token and connections.
    """
    ready = log_file.with_suffix(f".{time.monotonic_ns()}.ready.json")
    child = spawn("fakeplex", ["-m", "plexsync.fakeplex", *args, "--ready-file", str(ready)], {}, log_file)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if not child.alive() or time.monotonic() > deadline:
            child.stop(timeout=2)
            raise ServiceStartError(f"fakeplex did not start:\n{log_tail(log_file)}")
        time.sleep(0.05)
    info: dict[str, Any] = json.loads(ready.read_text())
    ready.unlink()
    child.address = str(info["url"])
    return child, info
