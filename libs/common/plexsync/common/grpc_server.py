"""The gRPC bootstrap every service runs: interceptors, health, reflection, graceful shutdown.

A service builds a `ServiceApp`, adds its servicers, and calls `run(ready)`. Health reports NOT_SERVING
until `ready` (connecting to the database, NATS, peers) has succeeded, then SERVING while the readiness checks
(`add_readiness_check`: its database, NATS) pass; on SIGTERM or SIGINT it reports NOT_SERVING, stops taking new
calls, lets in-flight calls finish within the grace period and runs the shutdown hooks. The ``liveness`` health
service is SERVING from start to shutdown whatever the dependencies do (see plexsync.common.readiness).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from plexsync.common import grpc_errors, pagination, version
from plexsync.common.access import DenialSink, Role
from plexsync.common.config import CommonSettings
from plexsync.common.interceptors import BearerTokenInterceptor, RequestDecodingInterceptor
from plexsync.common.limits import RateLimiter, RateLimitInterceptor
from plexsync.common.readiness import LIVENESS_SERVICE, Check, DependencyMonitor
from plexsync.common.reflection import V1ALPHA_SERVICE, enable_reflection
from plexsync.common.telemetry import server_interceptor, setup_telemetry
from plexsync.common.tls import ReloadingServerCredentials, TlsConfigError, server_credentials
from plexsync.common.validation import RequestValidationInterceptor
from plexsync.v1 import version_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
]


def freeze_startup_heap() -> None:
    """Move every object alive once the service is ready out of the garbage collector's generations.

    Modules, protobuf descriptors, connection pools and settings live as long as the process; without this,
    each full collection traverses them all again. Measured in the catalog during a 50,000-movie ingest and
    re-send: 0.70 s of collections (0.43 s of them five full ones over ~130,000 startup objects) → 0.29 s."""
    gc.collect()
    gc.freeze()


class ServiceApp:
    """One service process: a grpc.aio server plus its lifecycle."""

    tls: ReloadingServerCredentials | None = None  # set by start(): the served certificate, None on plain TCP
    _health_server: grpc.aio.Server | None = None  # PLEXSYNC_HEALTH_PORT's health-only server
    health_port = 0

    def __init__(
        self,
        name: str,
        settings: CommonSettings,
        *,
        policy: Mapping[str, frozenset[Role]] | None = None,
        on_denied: DenialSink | None = None,
        extra_interceptors: list[grpc.aio.ServerInterceptor] | None = None,
    ) -> None:
        self.name = name
        grpc_errors.set_service_domain(name)
        self.settings = settings
        tokens = settings.accepted_tokens()
        if not tokens:
            raise RuntimeError(
                "PLEXSYNC_SERVICE_TOKENS is empty: set it to 'identity:token,...' for the callers this "
                f"{name} service accepts"
            )
        pagination.configure_token_key(pagination.token_key(settings, name))
        self.telemetry = setup_telemetry(name)
        interceptors: list[grpc.aio.ServerInterceptor] = [
            server_interceptor(),
            *(extra_interceptors or []),
            BearerTokenInterceptor(tokens, policy, on_denied),
            *self._rate_limit(settings),
            RequestDecodingInterceptor(),
            RequestValidationInterceptor(),
        ]
        options = [*SERVER_OPTIONS, ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams)]
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = [health.SERVICE_NAME, V1ALPHA_SERVICE]
        self.add_service(version.SERVICE_NAME, version_pb2_grpc.add_VersionServiceServicer_to_server,
                         version.VersionServicer(name))  # fmt: skip
        self._shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self._stop_hooks: list[Callable[[], object]] = []
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.port = 0
        self.readiness = DependencyMonitor(self._readiness_changed, interval=settings.readiness_check_seconds)

    @staticmethod
    def _rate_limit(settings: CommonSettings) -> list[grpc.aio.ServerInterceptor]:
        if settings.rate_limit_per_second <= 0:
            return []
        try:
            roles = frozenset(Role(r.strip()) for r in settings.rate_limit_roles.split(",") if r.strip())
        except ValueError:
            raise RuntimeError(
                f"PLEXSYNC_RATE_LIMIT_ROLES must name roles among {', '.join(r.value for r in Role)}"
            ) from None
        limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        return [RateLimitInterceptor(limiter, roles)] if roles else []

    def add_service(self, full_name: str, add_to_server: Callable[[Any, grpc.aio.Server], None], servicer: Any) -> None:
        """Register a servicer under its full name (for health and reflection)."""
        add_to_server(servicer, self.server)
        self._service_names.append(full_name)

    def add_readiness_check(self, name: str, check: Check) -> None:
        """A dependency the service cannot serve without: while `check` keeps failing, readiness is NOT_SERVING."""
        self.readiness.add(name, check)

    async def _readiness_changed(self, ready: bool) -> None:
        if not self._stop.is_set():
            await self._set_status(
                health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            )

    def on_stop_requested(self, hook: Callable[[], object]) -> None:
        """Run `hook` the moment SIGTERM arrives, before in-flight calls drain (e.g. stop taking queued work and
        hand running work back, so another replica starts it while this one drains)."""
        self._stop_hooks.append(hook)

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` after in-flight calls have drained (close pools, flush telemetry)."""
        self._shutdown_hooks.append(hook)

    async def start(self) -> int:
        enable_reflection(self._service_names, self.server)
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        self.port = self._bind(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind gRPC port {address}")
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        await self._start_health_port()
        self.started.set()
        log.info("%s listening", self.name, extra={"port": self.port})
        return self.port

    async def _start_health_port(self) -> None:
        """With PLEXSYNC_HEALTH_PORT, also serve the health service alone on plain TCP there.

        The kubelet's gRPC probe cannot speak TLS; this port answers Health/Check and Watch (readiness, `liveness`)
        and nothing else, so probes stay cheap while every other call needs TLS."""
        if not self.settings.health_port:
            return
        self._health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
        address = f"{self.settings.grpc_host}:{self.settings.health_port}"
        self.health_port = self._health_server.add_insecure_port(address)
        if self.health_port == 0:
            raise RuntimeError(f"could not bind the health port {address}")
        await self._health_server.start()
        log.info("%s serves health checks on plain TCP", self.name, extra={"health_port": self.health_port})

    def _bind(self, address: str) -> int:
        """A TLS port (plexsync.common.tls), or plain TCP only when PLEXSYNC_GRPC_INSECURE=true says so.

        A missing or unusable certificate ends the process with one clear message (exit 2), before it serves."""
        try:
            self.tls = server_credentials(self.settings)
        except TlsConfigError as exc:
            log.critical("%s refuses to start: %s", self.name, exc)
            raise SystemExit(2) from None
        if self.tls is None:
            log.warning("%s serves plain TCP without TLS (PLEXSYNC_GRPC_INSECURE=true)", self.name)
            return int(self.server.add_insecure_port(address))
        log.info(
            "%s serves TLS",
            self.name,
            extra={"cert_file": self.tls.cert_file, "client_auth": self.settings.tls_client_auth},
        )
        return int(self.server.add_secure_port(address, self.tls.credentials()))

    async def _set_status(self, status: Any) -> None:
        await self.health.set("", status)
        for service in self._service_names[2:]:
            await self.health.set(service, status)

    def request_stop(self) -> None:
        if not self._stop.is_set():
            for hook in self._stop_hooks:
                try:
                    hook()
                except Exception:
                    log.exception("stop hook failed")
        self._stop.set()

    async def run(self, ready: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Start, become ready, serve until SIGTERM/SIGINT, then drain and shut down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            if ready is not None:
                ready_task: asyncio.Task[None] = asyncio.create_task(ready())
                stop_task = asyncio.create_task(self._stop.wait())
                done, _ = await asyncio.wait({ready_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
                if ready_task in done:
                    ready_task.result()
                else:
                    ready_task.cancel()
                stop_task.cancel()
            if not self._stop.is_set():
                freeze_startup_heap()
                await self._set_status(health_pb2.HealthCheckResponse.SERVING)
                log.info("%s ready", self.name)
                self.readiness.start()
                await self._stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        log.info("%s shutting down", self.name, extra={"grace_seconds": self.settings.shutdown_grace_seconds})
        await self.readiness.stop()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        if self._health_server is not None:
            await self._health_server.stop(0)
        for hook in reversed(self._shutdown_hooks):
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        log.info("%s stopped", self.name)
        self.telemetry.shutdown()
