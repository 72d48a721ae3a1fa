"""The metrics plexsync exports, defined once so names, units and attributes stay consistent.

Instruments are created from the global meter provider that `telemetry.setup_telemetry` installs; with no
OTLP endpoint they are cheap no-ops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation


class PlexsyncMetrics:
    """Every instrument, created on first use."""

    @cached_property
    def _meter(self) -> metrics.Meter:
        return metrics.get_meter("plexsync")

    @cached_property
    def scan_duration(self) -> metrics.Histogram:
        """Seconds a scan took, by plexsync.library.kind, plexsync.scan.mode and plexsync.scan.outcome."""
        return self._meter.create_histogram("plexsync.scan.duration", unit="s", description="Duration of scans")

    @cached_property
    def scan_items(self) -> metrics.Counter:
        """Items processed, by plexsync.item.outcome (added/updated/unchanged/failed) and library kind."""
        return self._meter.create_counter("plexsync.scan.items", unit="{item}", description="Items processed by scans")

    @cached_property
    def realtime_delay(self) -> metrics.Histogram:
        """Seconds from a change in Plex (its updatedAt, or the notification's arrival) to the catalog's commit."""
        return self._meter.create_histogram(
            "plexsync.realtime.delay", unit="s", description="Plex change to catalog commit, for real-time updates"
        )

    @cached_property
    def realtime_changes(self) -> metrics.Counter:
        return self._meter.create_counter(
            "plexsync.realtime.changes", unit="{change}", description="Item changes applied from Plex notifications"
        )

    @cached_property
    def realtime_reconnects(self) -> metrics.Counter:
        return self._meter.create_counter(
            "plexsync.realtime.reconnects", unit="{reconnect}", description="Notification stream reconnections"
        )

    @cached_property
    def realtime_fallback_scans(self) -> metrics.Counter:
        return self._meter.create_counter(
            "plexsync.realtime.fallback_scans", unit="{scan}",
            description="Incremental scans asked for because a change may have been missed",
        )  # fmt: skip

    @cached_property
    def scans_running(self) -> metrics.UpDownCounter:
        return self._meter.create_up_down_counter("plexsync.scans.running", unit="{scan}", description="Scans running")

    @cached_property
    def plex_request_duration(self) -> metrics.Histogram:
        """Latency of Plex requests, by plexsync.plex.endpoint (a path template) and http.response.status_code."""
        return self._meter.create_histogram(
            "plexsync.plex.request.duration", unit="s", description="Latency of requests to Plex"
        )

    @cached_property
    def plex_request_errors(self) -> metrics.Counter:
        """Failed Plex requests (transport errors and non-2xx), by endpoint and status or error type."""
        return self._meter.create_counter(
            "plexsync.plex.request.errors", unit="{request}", description="Failed requests to Plex"
        )

    @cached_property
    def catalog_batch_duration(self) -> metrics.Histogram:
        """Seconds the catalog took to write one WriteItems batch."""
        return self._meter.create_histogram(
            "plexsync.catalog.batch.duration", unit="s", description="Catalog write latency per batch"
        )

    @cached_property
    def catalog_write_conflicts(self) -> metrics.Counter:
        """WriteItems batches rolled back and written again because another writer of the same library got in
        the way, by plexsync.conflict (unique_violation, deadlock, lock_timeout)."""
        return self._meter.create_counter(
            "plexsync.catalog.write.conflicts", unit="{batch}", description="Batches written again after a conflict"
        )

    @cached_property
    def job_lag(self) -> metrics.Histogram:
        """Seconds from a job becoming due (or being triggered) to its scan starting, by plexsync.job.trigger."""
        return self._meter.create_histogram("plexsync.job.lag", unit="s", description="Job due to scan start")

    @cached_property
    def job_duration(self) -> metrics.Histogram:
        """Seconds from a job's start to its end, by plexsync.scan.mode, plexsync.library.kind and outcome."""
        return self._meter.create_histogram("plexsync.job.duration", unit="s", description="Duration of jobs")

    @cached_property
    def outbox_publish_failures(self) -> metrics.Counter:
        """Outbox relay passes that could not publish a row (NATS away), by plexsync.outbox (the schema)."""
        return self._meter.create_counter(
            "plexsync.outbox.publish.failures", unit="{failure}", description="Failed publishes from the outbox"
        )

    @cached_property
    def _outbox_depths(self) -> dict[str, Callable[[], int]]:
        depths: dict[str, Callable[[], int]] = {}

        def depth_cb(_: CallbackOptions) -> Iterable[Observation]:
            for schema, depth in list(depths.items()):
                yield Observation(depth(), {"plexsync.outbox": schema})

        self._meter.create_observable_gauge(
            "plexsync.outbox.depth", [depth_cb], unit="{event}", description="Events waiting in the outbox"
        )
        return depths

    def observe_outbox_depth(self, schema: str, depth: Callable[[], int]) -> None:
        """Report how many events wait in `schema`'s outbox (one gauge, one series per schema)."""
        self._outbox_depths[schema] = depth

    def observe_job_queue(self, depth: Callable[[], int], oldest_age_seconds: Callable[[], float]) -> None:
        """Register gauges for the scan job queue (depth and age of the oldest job)."""

        def depth_cb(_: CallbackOptions) -> Iterable[Observation]:
            yield Observation(depth())

        def age_cb(_: CallbackOptions) -> Iterable[Observation]:
            yield Observation(oldest_age_seconds())

        self._meter.create_observable_gauge("plexsync.jobs.queue.depth", [depth_cb], unit="{job}")
        self._meter.create_observable_gauge("plexsync.jobs.queue.age", [age_cb], unit="s")


METRICS = PlexsyncMetrics()
