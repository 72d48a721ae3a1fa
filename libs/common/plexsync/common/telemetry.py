"""OpenTelemetry for every service, configured only by the standard OTEL_* environment variables.

Batching and export intervals follow OTEL_BSP_SCHEDULE_DELAY, OTEL_METRIC_EXPORT_INTERVAL and friends.
Traces, metrics and logs go over OTLP (gRPC or HTTP/protobuf, per OTEL_EXPORTER_OTLP_PROTOCOL) when
OTEL_EXPORTER_OTLP_ENDPOINT (or a per-signal endpoint) is set. Without an endpoint nothing is exported,
but a tracer provider still runs so trace ids propagate across services and appear in the JSON logs.
`ServiceApp` calls `setup_telemetry` once per process and `shutdown` flushes on exit.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger(__name__)

# Plumbing calls that would drown the traces that matter.
_QUIET_SERVICES = filters.negate(
    filters.any_of(
        filters.service_name("grpc.health.v1.Health"),
        filters.service_prefix("grpc.reflection."),
    )
)


def _endpoint(signal: str) -> str:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")


def _protocol(signal: str) -> str:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )


def _span_exporter() -> Any:
    if _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter()


def _metric_exporter() -> Any:
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    return HttpMetricExporter()


def _log_exporter() -> Any:
    if _protocol("LOGS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

        return GrpcLogExporter()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

    return HttpLogExporter()


@dataclass
class Telemetry:
    """The providers of this process, for flushing on shutdown."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: Any = None
    exporting: bool = False

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        """Flush and stop every exporter, giving up after `timeout_seconds` (a collector that is gone must not
        hold a pod past its termination grace period)."""

        def flush_all() -> None:
            for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
                if provider is None:
                    continue
                try:
                    provider.shutdown()
                except Exception:
                    log.warning("telemetry shutdown failed", exc_info=True)

        worker = threading.Thread(target=flush_all, name="telemetry-shutdown", daemon=True)
        worker.start()
        worker.join(timeout_seconds)
        if worker.is_alive():
            log.warning("telemetry did not flush in time; exiting without it", extra={"seconds": timeout_seconds})


_current: Telemetry | None = None


def setup_telemetry(service_name: str) -> Telemetry:
    """Install tracer, meter and (when exporting) logger providers once per process."""
    global _current
    if _current is not None:
        return _current
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        _current = Telemetry(TracerProvider(), MeterProvider())
        return _current
    os.environ.setdefault("OTEL_SERVICE_NAME", service_name)
    # Stable semantic conventions (http.request.method, url.full, db.system.name...) rather than the old ones.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    resource = Resource.create({"service.namespace": "plexsync"})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    logger_provider: Any = None
    exporting = False
    if _endpoint("TRACES"):
        tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter()))
        exporting = True
    if _endpoint("METRICS"):
        readers.append(PeriodicExportingMetricReader(_metric_exporter()))
    if _endpoint("LOGS"):
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(_log_exporter()))
        set_logger_provider(logger_provider)
        logging.getLogger().addHandler(LoggingHandler(logger_provider=logger_provider))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _instrument_httpx()
    _instrument_psycopg()
    _current = Telemetry(tracer_provider, meter_provider, logger_provider, exporting)
    return _current


def _instrument_psycopg() -> None:
    """Spans for every SQL statement psycopg runs (through SQLAlchemy or directly), children of the RPC span."""
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    instrumentor = PsycopgInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(enable_commenter=False)


def _instrument_httpx() -> None:
    """Spans for every httpx request (Plex, plex.tv). URLs never carry tokens: they go in headers."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def server_interceptor() -> Any:
    """gRPC aio server interceptor: a SERVER span per RPC with rpc.* attributes, context from the caller."""
    return aio_server_interceptor(filter_=_QUIET_SERVICES)  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """gRPC aio client interceptors: a CLIENT span per call, W3C trace context in the metadata."""
    return list(aio_client_interceptors(filter_=_QUIET_SERVICES))  # type: ignore[no-untyped-call]


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits (what logs, audit rows and error messages quote); "" outside one."""
    span_context = trace.get_current_span().get_span_context()
    return f"{span_context.trace_id:032x}" if span_context.is_valid else ""


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
