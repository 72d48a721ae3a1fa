"""A transactional outbox: lifecycle events are rows first, NATS messages second, so none is lost to an outage.

A service writes the event into its own schema's ``outbox`` table (`add`, inside the transaction of the state
change it reports, or `OutboxRelay.enqueue`, in a transaction of its own just before it would have published).
One `OutboxRelay` per process publishes the rows in id order with ``Nats-Msg-Id`` = msg_id and deletes each once
JetStream acked it; while NATS is away the rows wait and the relay backs off.

What "at least once" means here: every committed row reaches the stream, possibly more than once, in id order
(so one writer's events, such as a scan's, in the order it wrote them; rows of concurrent transactions may
interleave by id rather than by commit). JetStream drops a repeat of a msg_id within the stream's duplicate
window (`eventbus.DUPLICATE_WINDOW_SECONDS`); a repeat after a longer outage (a publish whose ack was lost just
before NATS went away) can only carry the very same stored bytes, so the same ``event_id``, and the relay first
checks whether the stream's last message on that subject is already it. Consumers dedupe by event_id.

Replicas sharing a schema take turns: a pass holds a transaction advisory lock on the schema's outbox, so one
relay at a time publishes, in id order, and no event of a scan overtakes an earlier one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from datetime import datetime
from typing import Protocol

from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate
from plexsync.common.eventbus import DUPLICATE_WINDOW_SECONDS
from plexsync.common.metrics import METRICS
from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, Text, bindparam, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

log = logging.getLogger(__name__)

TABLE = "outbox"


class OutboxColumns:
    """The outbox table; each service's models declare ``class OutboxRow(OutboxColumns, Base)``."""

    __tablename__ = TABLE

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(Text, nullable=False)
    msg_id: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # W3C trace context of the writer, so the publish span joins the trace of what the event reports.
    headers: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=text("now()"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    last_error: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # When a publish of the row first went out without an ack: it may be in the stream already.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


_INSERT = text(
    f"INSERT INTO {TABLE} (subject, msg_id, payload, headers) VALUES (:subject, :msg_id, :payload, :headers)"
).bindparams(bindparam("headers", type_=JSONB))

_relays: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()


def _wake_all() -> None:
    for relay in list(_relays):
        relay.wake()


async def add(conn: AsyncConnection | AsyncSession, subject: str, message: Message, msg_id: str) -> None:
    """Write `message` to the outbox of the schema first on `conn`'s search path, in its current transaction.

    The process's relays are woken when that transaction commits (their poll covers other processes).
    """
    headers: dict[str, str] = {}
    propagate.inject(headers)
    params = {"subject": subject, "msg_id": msg_id, "payload": message.SerializeToString(), "headers": headers}
    await conn.execute(_INSERT, params)
    loop = asyncio.get_running_loop()
    if isinstance(conn, AsyncSession):
        event.listen(conn.sync_session, "after_commit", lambda _s: loop.call_soon(_wake_all), once=True)
    else:
        event.listen(conn.sync_connection, "commit", lambda _c: loop.call_soon(_wake_all), once=True)


class RelayBus(Protocol):
    """What the relay needs of the event bus (`eventbus.EventBus`)."""

    @property
    def connected(self) -> bool: ...

    async def publish_bytes(self, subject: str, payload: bytes, *, msg_id: str) -> object: ...

    async def last_msg_id(self, subject: str) -> str | None: ...


class OutboxPublishError(RuntimeError):
    """A row could not be published now; it stays in the outbox."""


class OutboxRelay:
    """Publishes one schema's outbox to NATS, in order, until drained."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: RelayBus,
        *,
        schema: str,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        duplicate_window_seconds: float = DUPLICATE_WINDOW_SECONDS,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.schema = schema
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # A row sent this long ago may be past JetStream's de-duplication: look before sending it again.
        self.recheck_after_seconds = max(duplicate_window_seconds - 10.0, 0.0)
        self.table = f'"{schema}".{TABLE}'
        self.lock_key = f"plexsync.{schema}.outbox"
        self.depth = 0
        self.published = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            _relays.add(self)
            METRICS.observe_outbox_depth(self.schema, lambda: self.depth)
            self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.schema}")

    def wake(self) -> None:
        self._wake.set()

    async def enqueue(self, subject: str, message: Message, *, msg_id: str) -> None:
        """Write one event in a transaction of its own, then wake the relay."""
        async with self.engine.begin() as conn:
            await add(conn, subject, message, msg_id)
        self.wake()

    async def relay_once(self) -> int | None:
        """Publish up to a batch of rows in id order; how many went out, or None if another replica relays now.

        Raises OutboxPublishError (after deleting what did go out) when a row could not be published.
        """
        failure: tuple[int, bool, Exception] | None = None
        done: list[int] = []
        async with self.engine.begin() as conn:
            locked = await conn.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"), {"key": self.lock_key})
            if not locked:
                return None
            rows = (
                await conn.execute(
                    text(
                        f"SELECT id, subject, msg_id, payload, headers, "
                        f"sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => :recheck) AS recheck "
                        f"FROM {self.table} ORDER BY id LIMIT :n"
                    ),
                    {"n": self.batch_size, "recheck": self.recheck_after_seconds},
                )
            ).all()
            for row in rows:
                sent = False
                try:
                    if not self.bus.connected:
                        raise ConnectionError("not connected to NATS")
                    sent = True
                    await self._publish(row.subject, bytes(row.payload), row.msg_id, dict(row.headers), row.recheck)
                except Exception as exc:
                    failure = (row.id, sent, exc)
                    break
                done.append(row.id)
            if done:
                await conn.execute(text(f"DELETE FROM {self.table} WHERE id = ANY(:ids)"), {"ids": done})
            if failure is not None:
                row_id, was_sent, error = failure
                await conn.execute(
                    text(
                        f"UPDATE {self.table} SET attempts = attempts + 1, last_error = :error, "
                        f"sent_at = CASE WHEN :sent THEN coalesce(sent_at, now()) ELSE sent_at END WHERE id = :id"
                    ),
                    {"id": row_id, "error": _describe(error), "sent": was_sent},
                )
            self.depth = int(await conn.scalar(text(f"SELECT count(*) FROM {self.table}")) or 0)
        self.published += len(done)
        if failure is not None:
            raise OutboxPublishError(_describe(failure[2])) from failure[2]
        return len(done)

    async def _publish(self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str], recheck: bool) -> None:
        token = otel_context.attach(propagate.extract(headers))
        try:
            if recheck and await self.bus.last_msg_id(subject) == msg_id:
                return  # stored by the earlier send whose ack was lost; sending again would duplicate it
            await self.bus.publish_bytes(subject, payload, msg_id=msg_id)
        finally:
            otel_context.detach(token)

    async def _run(self) -> None:
        backoff = self.backoff_initial
        failing = False
        while True:
            self._wake.clear()
            try:
                published = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                METRICS.outbox_publish_failures.add(1, {"plexsync.outbox": self.schema})
                if not failing:
                    log.warning(
                        "could not publish from the outbox; events wait there and will be retried",
                        extra={"schema": self.schema, "pending": self.depth, "error": _describe(exc.__cause__ or exc)},
                    )
                failing = True
                if self._stopping:
                    return
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            if failing:
                log.info("publishing from the outbox again", extra={"schema": self.schema, "pending": self.depth})
                failing = False
            backoff = self.backoff_initial
            if published is not None and published >= self.batch_size:
                continue
            if self._stopping:
                return  # drained, or another replica is relaying and takes what is left
            await self._wait(self.poll_seconds if published is not None else min(self.poll_seconds, 0.25))

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _sleep(self, seconds: float) -> None:
        """Back off; only a drain cuts it short (new rows do not: NATS is what is missing)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._stopping and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await self._wait(left)
            self._wake.clear()

    async def drain(self, timeout_seconds: float = 5.0) -> None:
        """Publish what is pending (bounded), then stop; what cannot go out now stays for the next relay."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout_seconds)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        _relays.discard(self)
        if self.depth:
            log.info("outbox not empty at shutdown; another replica or the next start publishes it",
                     extra={"schema": self.schema, "pending": self.depth})  # fmt: skip


def _describe(exc: BaseException) -> str:
    """Error class and message, short (no payloads; NATS errors carry no credentials)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}"[:500] if message else type(exc).__name__
