"""What the user types, checked before any call (durations, daily windows, time zones), and the same values
formatted back for tables, so a typo gets a message about the flag rather than a round trip."""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime

from google.protobuf import duration_pb2, timestamp_pb2
from plexsync.cli.client import CliError
from plexsync.v1 import scheduler_pb2

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def parse_duration(text: str, *, allow_default: bool = False) -> duration_pb2.Duration:
    """'6h', '1d12h', '30m', '90s' -> Duration; 'default' -> zero (the service's default), where allowed."""
    cleaned = text.strip().lower()
    if allow_default and cleaned == "default":
        return duration_pb2.Duration()
    match = _DURATION.match(cleaned)
    if not cleaned or match is None:
        hint = " or 'default'" if allow_default else ""
        raise CliError(f"invalid duration {text!r}: use forms like 30m, 6h, 1d12h{hint}")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return duration_pb2.Duration(seconds=((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def format_duration(value: duration_pb2.Duration | float) -> str:
    """Seconds (or a Duration) as '1d6h', '2h30m', '20s', '1.5s'; zero as '0s'."""
    seconds = value if isinstance(value, (int, float)) else value.seconds + value.nanos / 1e9
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    total = round(seconds)
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)


def parse_window(text: str, time_zone: str) -> scheduler_pb2.TimeWindow:
    """'01:00-06:00' in an IANA zone -> TimeWindow; start after end spans midnight."""
    start, sep, end = text.strip().partition("-")
    if not sep:
        raise CliError(f"invalid window {text!r}: write START-END in 24-hour time, e.g. 01:00-06:00")
    clocks = []
    for clock in (start.strip(), end.strip()):
        match = _CLOCK.match(clock)
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise CliError(f"invalid window {text!r}: {clock!r} is not a time of day (00:00 to 23:59)")
        clocks.append(f"{int(match.group(1)):02d}:{match.group(2)}")
    if clocks[0] == clocks[1]:
        raise CliError(f"invalid window {text!r}: start and end are the same (use --no-window for any time)")
    return scheduler_pb2.TimeWindow(start=clocks[0], end=clocks[1], time_zone=check_time_zone(time_zone))


def check_time_zone(name: str) -> str:
    """An IANA zone name as given, or a CliError; without zone data here, the scheduler decides."""
    name = name.strip()
    if not name or not zoneinfo.available_timezones():
        return name
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CliError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC") from None
    return name


def format_window(window: scheduler_pb2.TimeWindow) -> str:
    if not (window.start or window.end):
        return "any time"
    return f"{window.start}-{window.end} {window.time_zone or 'UTC'}"


def format_time(ts: timestamp_pb2.Timestamp, has: bool = True) -> str:
    """A timestamp in the local time zone with its offset; unset reads as '-'."""
    if not has:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).astimezone().isoformat(timespec="seconds")


def format_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def now_utc() -> datetime:
    return datetime.now(UTC)
