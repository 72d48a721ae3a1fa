"""When a library is due, and in which mode: pure functions of its settings, its stored history and the time.

Nothing here keeps timers: every tick recomputes what is due from the job history in PostgreSQL, so a
restart (or a new leader) decides exactly what the old one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from plexsync.common.errors import FieldViolation

INCREMENTAL = "incremental"
DEEP = "deep"
MAX_RETRY_DOUBLINGS = 10


@dataclass(frozen=True)
class Window:
    """A daily window [start, end) in a time zone; start after end spans midnight."""

    start: time
    end: time
    zone: ZoneInfo

    @property
    def zone_name(self) -> str:
        return self.zone.key

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone).time().replace(second=0, microsecond=0)
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_open(self, moment: datetime) -> datetime:
        """`moment` if the window is open then, else the next time it opens."""
        if self.contains(moment):
            return moment
        local = moment.astimezone(self.zone)
        for days in range(0, 3):
            day = (local + timedelta(days=days)).date()
            opening = datetime.combine(day, self.start, tzinfo=self.zone)
            if opening > moment:
                return opening.astimezone(UTC)
        return moment  # unreachable for a real window; never block scheduling forever


def parse_clock(text: str, field: str) -> time | FieldViolation:
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        return FieldViolation(field, f"must be HH:MM on a 24-hour clock, got {text[:20]!r}")
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        return FieldViolation(field, f"must be between 00:00 and 23:59, got {text[:20]!r}")
    return time(h, m)


def parse_window(start: str, end: str, zone: str, field: str = "schedule.window") -> Window | list[FieldViolation]:
    """A Window from its text form, or the violations that say what is wrong with it."""
    violations: list[FieldViolation] = []
    begin = parse_clock(start, f"{field}.start")
    finish = parse_clock(end, f"{field}.end")
    tz: ZoneInfo | None = None
    try:
        tz = ZoneInfo(zone.strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        violations.append(FieldViolation(f"{field}.time_zone", f"unknown time zone {zone[:64]!r}; use an IANA name"))
    for value in (begin, finish):
        if isinstance(value, FieldViolation):
            violations.append(value)
    if violations or tz is None or isinstance(begin, FieldViolation) or isinstance(finish, FieldViolation):
        return violations
    if begin == finish:
        return [FieldViolation(f"{field}.end", "must differ from start (leave the window unset for any time)")]
    return Window(begin, finish, tz)


@dataclass(frozen=True)
class Cadence:
    """What the schedule asks for, with the service defaults already applied."""

    interval: timedelta
    deep_every: int
    deep_interval: timedelta | None
    window: Window | None
    retry_base: timedelta


@dataclass(frozen=True)
class History:
    """What the job history says about a library (kept per library by the repository)."""

    last_success: datetime | None = None
    last_deep: datetime | None = None
    incrementals_since_deep: int = 0
    consecutive_failures: int = 0
    last_failure: datetime | None = None


@dataclass(frozen=True)
class Decision:
    due: bool
    next_run: datetime
    mode: str
    reason: str


def decide(cadence: Cadence, history: History, now: datetime) -> Decision:
    """Whether the library is due at `now`, when its next scheduled scan is, its mode and why."""
    if history.last_success is None and history.consecutive_failures == 0:
        next_run, reason = now, "never scanned"
    elif history.last_failure is not None and (
        history.last_success is None or history.last_failure > history.last_success
    ):
        doublings = min(max(history.consecutive_failures - 1, 0), MAX_RETRY_DOUBLINGS)
        backoff = min(cadence.interval, cadence.retry_base * (2**doublings))
        next_run = history.last_failure + backoff
        reason = f"retry {history.consecutive_failures} after a failed scan (backoff {_human(backoff)})"
    else:
        assert history.last_success is not None
        next_run = history.last_success + cadence.interval
        reason = f"due: last scan {_human(now - history.last_success)} ago, interval {_human(cadence.interval)}"
    if cadence.window is not None:
        candidate = max(next_run, now)
        opened = cadence.window.next_open(candidate)
        if opened != candidate:
            next_run = opened
            window = cadence.window
            reason += f"; waits for the window {window.start:%H:%M}-{window.end:%H:%M} {window.zone_name}"
    mode, why_deep = _mode(cadence, history, now)
    if why_deep:
        reason += f"; {why_deep}"
    due = next_run <= now
    return Decision(due=due, next_run=next_run, mode=mode, reason=reason)


def _mode(cadence: Cadence, history: History, now: datetime) -> tuple[str, str]:
    if history.last_success is None:
        return INCREMENTAL, ""
    if cadence.deep_every > 0 and history.incrementals_since_deep + 1 >= cadence.deep_every:
        return DEEP, f"deep: every {_ordinal(cadence.deep_every)} scan"
    if cadence.deep_interval is not None:
        baseline = history.last_deep or history.last_success
        if history.last_deep is None and history.incrementals_since_deep == 0:
            return INCREMENTAL, ""
        if now - baseline >= cadence.deep_interval:
            return DEEP, f"deep: last deep scan {_human(now - baseline)} ago (every {_human(cadence.deep_interval)})"
    return INCREMENTAL, ""


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _human(delta: timedelta) -> str:
    """'6h', '2d', '90s': the largest whole unit, for reasons a person reads."""
    seconds = int(max(delta.total_seconds(), 0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
