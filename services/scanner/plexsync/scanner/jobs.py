"""JobRunner: runs the scheduler's scan jobs from the JetStream work queue, sharing them with other replicas.

Every scanner replica pulls from one durable consumer, one job per free slot (``PLEXSYNC_SCAN_MAX_JOBS``), so a
busy replica never holds jobs another could run. A job's scan runs inside the message's consumer span (one trace
from the scheduler's trigger down to Plex, the catalog and SQL); the message is kept in progress while it runs
and acknowledged when it ends. On shutdown the running job scans are cancelled as *requeued* and their messages
nak'ed, so another replica takes them at once; a replica killed outright leaves its message to be redelivered
after the ack wait, and the next replica finds the dead scan's row abandoned. The scheduler learns everything
from the scan events (``job_id`` on each): a job that cannot start still ends with a ``failed`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js.errors import APIError
from plexsync.common.errors import PlexsyncError, UnavailableError
from plexsync.common.eventbus import (
    JOB_CANCEL_SUBJECT,
    SCAN_JOB_CONSUMER,
    SCAN_JOB_SUBJECT,
    EventBus,
    consume_span,
)
from plexsync.scanner.manager import ERROR_CODES, ScanManager
from plexsync.scanner.repository import LibraryBusyError
from plexsync.scanner.settings import ScannerSettings
from plexsync.v1 import common_pb2, events_pb2

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "the scanner is shutting down; the job goes back to the queue"
CANCEL_REASON = "cancelled by request"
# How long one pull waits for a job: also how long a shutdown may wait for a pull in flight to return.
FETCH_SECONDS = 2.0
# While the library is busy with a live scan, try again this often (the message is kept in progress).
BUSY_RETRY_SECONDS = 1.0
# A peer (catalog, auth) unavailable at start: retry this long, then hand the job back to the queue.
UNAVAILABLE_GIVE_UP_SECONDS = 60.0
REMEMBERED_CANCELS = 1000
DONE_STATUSES = (common_pb2.SCAN_STATUS_COMPLETED, common_pb2.SCAN_STATUS_CANCELLED)

Outcome = Literal["ack", "nak"]


@dataclass
class _Job:
    """A job message this replica holds."""

    msg: Msg
    job: events_pb2.ScanJobMessage
    attempt: int
    scan_id: str = ""
    cancel_reason: str = ""
    # This replica stops: the job goes back to the queue.
    requeue: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class RecentCancels:
    """Job ids cancelled lately (bounded, oldest forgotten first), so a job delivered after its cancel is not run."""

    def __init__(self, capacity: int = REMEMBERED_CANCELS) -> None:
        self.capacity = capacity
        self._reasons: OrderedDict[str, str] = OrderedDict()

    def add(self, job_id: str, reason: str) -> bool:
        """Remember a cancel; False when the job was already known as cancelled (a repeated command)."""
        if job_id in self._reasons:
            self._reasons.move_to_end(job_id)
            return False
        self._reasons[job_id] = reason
        while len(self._reasons) > self.capacity:
            self._reasons.popitem(last=False)
        return True

    def get(self, job_id: str) -> str | None:
        return self._reasons.get(job_id)

    def __len__(self) -> int:
        return len(self._reasons)


def job_id_of(msg: Msg, job: events_pb2.ScanJobMessage) -> str:
    return job.job_id or dict(msg.headers or {}).get("Nats-Msg-Id", "")


class JobRunner:
    def __init__(self, *, manager: ScanManager, bus: EventBus, settings: ScannerSettings) -> None:
        self.manager = manager
        self.bus = bus
        self.settings = settings
        self.cancels = RecentCancels()
        self.jobs: dict[str, _Job] = {}
        self._slots = asyncio.Semaphore(settings.scan_max_jobs)
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetcher: asyncio.Task[None] | None = None
        self._pulling = False
        self._sub: Any = None
        self._cancel_sub: Any = None
        self._closing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        try:
            await self.bus.ensure_job_consumer(
                ack_wait_seconds=s.scan_job_ack_wait_seconds, max_deliver=s.scan_job_max_deliver
            )
        except APIError as exc:
            # Another replica (another version) made the consumer with settings this server will not change in place;
            # share it as it is rather than stop: the queue still works, only its timings differ from ours.
            log.warning(
                "the shared job consumer exists with another configuration; using it as it is",
                extra={
                    "consumer": SCAN_JOB_CONSUMER,
                    "stream": s.jobs_stream,
                    "error": exc.description or str(exc),
                    "ack_wait_seconds": s.scan_job_ack_wait_seconds,
                    "max_deliver": s.scan_job_max_deliver,
                },
            )
        self._sub = await self.bus.js.pull_subscribe(SCAN_JOB_SUBJECT, durable=SCAN_JOB_CONSUMER, stream=s.jobs_stream)
        self._cancel_sub = await self.bus.nc.subscribe(JOB_CANCEL_SUBJECT, cb=self._on_cancel)
        self._fetcher = asyncio.create_task(self._fetch_forever(), name="scan-job-fetcher")
        log.info("taking scan jobs", extra={"max_jobs": s.scan_max_jobs, "consumer": SCAN_JOB_CONSUMER})

    def stop_fetching(self) -> None:
        """Take no more jobs (called as soon as the process is asked to stop)."""
        self._stopping.set()
        if self._fetcher is not None and not self._pulling:
            self._fetcher.cancel()  # waiting for a free slot: nothing in flight to lose

    def begin_close(self) -> asyncio.Task[None]:
        """Start `close` (once); at SIGTERM, so the jobs go back to the queue before the gRPC drain ends."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name="scan-jobs-close")
        return self._closing

    async def close(self) -> None:
        """Stop fetching, hand running jobs back to the queue (their scans cancelled as requeued), unsubscribe."""
        await asyncio.shield(self.begin_close())

    async def _close(self, wait_seconds: float = 15.0) -> None:
        self.stop_fetching()
        for job in list(self.jobs.values()):
            self._requeue(job)
        if self._fetcher is not None:
            # A pull in flight returns within FETCH_SECONDS; a job it brings is nak'ed, not lost until ack_wait.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._fetcher), FETCH_SECONDS + 1)
            self._fetcher.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=wait_seconds)
        for sub in (self._cancel_sub, self._sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def _requeue(self, job: _Job) -> None:
        if job.cancel_reason:
            return  # cancelled by request: it ends as that
        job.requeue = True
        job.wake.set()
        if job.scan_id:
            self.manager.cancel_running(job.scan_id, SHUTDOWN_REASON, requeued=True)

    # ------------------------------------------------------------------ fetching
    async def _fetch_forever(self) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()  # only with a free slot: a busy replica leaves jobs to the others
            if not await self._pull_one():
                self._slots.release()

    async def _pull_one(self) -> bool:
        """Fetch one job and start it; True when its task holds the slot (and releases it when done)."""
        if self._stopping.is_set():
            return False
        self._pulling = True
        try:
            msgs: list[Msg] = await self._sub.fetch(1, timeout=FETCH_SECONDS)
        except TimeoutError:
            return False
        except Exception as exc:
            log.warning("could not fetch scan jobs; retrying", extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(1.0)
            return False
        finally:
            self._pulling = False
        msg = msgs[0]
        if self._stopping.is_set():
            with contextlib.suppress(Exception):
                await msg.nak()
            return False
        task = asyncio.create_task(self._handle(msg), name="scan-job")
        self._tasks.add(task)
        task.add_done_callback(self._job_done)
        return True

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("scan job handler failed", exc_info=task.exception())

    # ------------------------------------------------------------------ one job
    async def _handle(self, msg: Msg) -> None:
        with consume_span(msg) as span:
            try:
                job = events_pb2.ScanJobMessage.FromString(msg.data)
            except DecodeError:
                log.error("dropping a scan job message that is not a ScanJobMessage", extra={"subject": msg.subject})
                with contextlib.suppress(Exception):
                    await msg.term()
                return
            job_id = job_id_of(msg, job)
            attempt = msg.metadata.num_delivered
            span.set_attribute("plexsync.job.id", job_id)
            span.set_attribute("plexsync.job.attempt", attempt)
            span.set_attribute("plexsync.library.id", job.library_id)
            held = self.jobs.get(job_id)
            if held is not None:
                # Redelivered to us while we still run it (a missed in-progress): answer for the newest delivery.
                held.msg = msg
                return
            state = _Job(msg=msg, job=job, attempt=attempt, requeue=self._stopping.is_set())
            state.job.job_id = job_id
            self.jobs[job_id] = state
            keeper = asyncio.create_task(self._keep_in_progress(state))
            outcome: Outcome = "nak"
            try:
                outcome = await self._run(state)
            except Exception:
                log.exception("scan job failed unexpectedly; it goes back to the queue", extra={"job_id": job_id})
            finally:
                keeper.cancel()
                self.jobs.pop(job_id, None)
            span.set_attribute("plexsync.job.outcome", outcome)
            await self._settle(state, outcome)

    async def _settle(self, state: _Job, outcome: Outcome) -> None:
        try:
            if outcome == "ack":
                await state.msg.ack_sync(timeout=5.0)
            else:
                await state.msg.nak()
        except Exception as exc:
            # Redelivered after ack_wait; the duplicate check (or another run) settles it then.
            log.warning(
                "could not settle a scan job message",
                extra={"job_id": state.job.job_id, "outcome": outcome, "error": type(exc).__name__},
            )

    async def _keep_in_progress(self, state: _Job) -> None:
        interval = self.settings.scan_job_ack_wait_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await state.msg.in_progress()
            except Exception as exc:
                log.warning(
                    "could not extend a scan job", extra={"job_id": state.job.job_id, "error": type(exc).__name__}
                )

    async def _run(self, state: _Job) -> Outcome:
        """Start the job's scan (waiting while its library is busy), wait for it to end; ack or hand it back."""
        job, job_id = state.job, state.job.job_id
        if await self._done_already(job_id):
            log.info("skipping a job that already ran", extra={"job_id": job_id, "attempt": state.attempt})
            return "ack"
        reason = self.cancels.get(job_id)
        if reason is not None:
            state.cancel_reason = reason
        unavailable_since: float | None = None
        waiting_logged = False
        while True:
            if state.requeue:
                return "nak"
            if state.cancel_reason:
                await self._record(state, common_pb2.SCAN_STATUS_CANCELLED, state.cancel_reason)
                return "ack"
            try:
                scan = await self.manager.start_scan(
                    job.library_id, job.mode, force=job.force, job_id=job_id, attempt=state.attempt
                )
                break
            except LibraryBusyError as exc:
                if await self._done_already(job_id):  # our own earlier delivery, still running elsewhere, ended
                    return "ack"
                if not waiting_logged:
                    waiting_logged = True
                    log.info(
                        "library busy; the job waits for its scan to end", extra={"job_id": job_id, "detail": str(exc)}
                    )
            except UnavailableError as exc:
                unavailable_since = unavailable_since or time.monotonic()
                if time.monotonic() - unavailable_since > UNAVAILABLE_GIVE_UP_SECONDS:
                    log.warning("a peer stayed unavailable; the job goes back to the queue", extra={"job_id": job_id})
                    return "nak"
                log.info("a peer is unavailable; the job waits", extra={"job_id": job_id, "detail": str(exc)})
            except PlexsyncError as exc:
                code = ERROR_CODES.get(type(exc), "FAILED_PRECONDITION")
                error = f"the job's scan of library {job.library_id or '(none)'} cannot start: {exc}"
                await self._record(state, common_pb2.SCAN_STATUS_FAILED, error, code)
                return "ack"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(state.wake.wait(), BUSY_RETRY_SECONDS)
        state.scan_id = scan.id
        if state.requeue:
            self.manager.cancel_running(scan.id, SHUTDOWN_REASON, requeued=True)
        elif state.cancel_reason:
            self.manager.cancel_running(scan.id, state.cancel_reason)
        final = await self.manager.wait(scan.id)
        log.info(
            "scan job ended",
            extra={"job_id": job_id, "scan_id": scan.id, "status": common_pb2.ScanStatus.Name(final.status)},
        )
        if final.status == common_pb2.SCAN_STATUS_CANCELLED and state.requeue and not state.cancel_reason:
            return "nak"
        return "ack"

    async def _done_already(self, job_id: str) -> bool:
        """Whether a scan of this job completed, or was cancelled on request (not handed back to the queue)."""
        rows = await self.manager.repository.for_job(job_id)
        return any(r.status in DONE_STATUSES and not r.requeued for r in rows)

    async def _record(self, state: _Job, status: common_pb2.ScanStatus.ValueType, error: str, code: str = "") -> None:
        job = state.job
        await self.manager.record_unstarted(
            library_id=job.library_id, server_id=job.server_id, mode=job.mode, force=job.force, job_id=job.job_id,
            attempt=state.attempt, status=status, error=error, code=code,
        )  # fmt: skip

    # ------------------------------------------------------------------ cancel
    async def _on_cancel(self, msg: Msg) -> None:
        try:
            command = events_pb2.CancelJobCommand.FromString(msg.data)
        except DecodeError:
            log.warning("ignoring a job cancel that is not a CancelJobCommand")
            return
        self.cancel(command.job_id, command.reason)

    def cancel(self, job_id: str, reason: str = "") -> None:
        """Cancel a job: its scan if this replica runs it, else (remembered) its message when it comes. Idempotent."""
        if not job_id:
            return
        reason = reason or CANCEL_REASON
        self.cancels.add(job_id, reason)
        state = self.jobs.get(job_id)
        if state is None or state.cancel_reason or state.requeue:
            return
        state.cancel_reason = reason
        state.wake.set()
        if state.scan_id:
            self.manager.cancel_running(state.scan_id, reason)
        log.info("cancelling a scan job", extra={"job_id": job_id, "scan_id": state.scan_id})
