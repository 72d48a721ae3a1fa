"""What is due, when and in which mode, on a clock the test controls: intervals, retries, deep cadence, windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from plexsync.scheduler.policy import DEEP, INCREMENTAL, Cadence, History, Window, decide, parse_window

T0 = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def cadence(**kw: object) -> Cadence:
    base: dict[str, object] = {"interval": 6 * HOUR, "deep_every": 0, "deep_interval": None, "window": None,
                               "retry_base": timedelta(minutes=1)}  # fmt: skip
    base.update(kw)
    return Cadence(**base)  # type: ignore[arg-type]


def window(start: str, end: str, zone: str) -> Window:
    parsed = parse_window(start, end, zone)
    assert isinstance(parsed, Window), parsed
    return parsed


def test_a_library_never_scanned_is_due_at_once_incrementally() -> None:
    d = decide(cadence(), History(), T0)
    assert (d.due, d.next_run, d.mode, d.reason) == (True, T0, INCREMENTAL, "never scanned")


def test_due_when_the_interval_since_the_last_success_has_passed() -> None:
    history = History(last_success=T0)
    assert not decide(cadence(), history, T0 + 5 * HOUR).due
    d = decide(cadence(), history, T0 + 6 * HOUR)
    assert d.due and d.next_run == T0 + 6 * HOUR and "last scan 6h ago" in d.reason


def test_failures_retry_with_doubling_backoff_capped_by_the_interval() -> None:
    for failures, wait in ((1, 1), (2, 2), (3, 4), (4, 8)):
        history = History(last_success=T0 - 10 * HOUR, consecutive_failures=failures, last_failure=T0)
        d = decide(cadence(), history, T0)
        assert d.next_run == T0 + timedelta(minutes=wait) and not d.due and f"retry {failures}" in d.reason
    history = History(last_success=None, consecutive_failures=30, last_failure=T0)
    assert decide(cadence(), history, T0).next_run == T0 + 6 * HOUR


def test_every_nth_scan_is_deep() -> None:
    c = cadence(deep_every=3)
    assert decide(c, History(last_success=T0, incrementals_since_deep=1), T0 + 7 * HOUR).mode == INCREMENTAL
    d = decide(c, History(last_success=T0, incrementals_since_deep=2), T0 + 7 * HOUR)
    assert d.mode == DEEP and "every 3rd scan" in d.reason


def test_a_scan_is_deep_when_the_last_deep_scan_is_old() -> None:
    c = cadence(deep_interval=timedelta(days=7))
    recent = History(last_success=T0, last_deep=T0 - timedelta(days=2), incrementals_since_deep=4)
    assert decide(c, recent, T0 + 7 * HOUR).mode == INCREMENTAL
    old = History(last_success=T0, last_deep=T0 - timedelta(days=8), incrementals_since_deep=4)
    assert decide(c, old, T0 + 7 * HOUR).mode == DEEP


def test_a_window_holds_a_due_scan_until_it_opens_in_its_time_zone() -> None:
    w = window("01:00", "06:00", "Europe/Berlin")  # 00:00-05:00 UTC in winter, 23:00-04:00 UTC in summer
    history = History(last_success=T0 - 7 * HOUR)
    noon = decide(cadence(window=w), history, T0)
    assert not noon.due and noon.next_run == datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # before the DST switch
    assert "waits for the window 01:00-06:00 Europe/Berlin" in noon.reason
    assert decide(cadence(window=w), history, datetime(2026, 3, 29, 0, 30, tzinfo=UTC)).due
    # After the switch to summer time 01:00 Berlin is 23:00 UTC the day before.
    summer = decide(cadence(window=w), History(last_success=datetime(2026, 3, 30, 12, tzinfo=UTC)),
                    datetime(2026, 3, 30, 19, tzinfo=UTC))  # fmt: skip
    assert summer.next_run == datetime(2026, 3, 30, 23, 0, tzinfo=UTC)


def test_a_window_across_midnight() -> None:
    w = window("22:00", "04:00", "UTC")
    assert w.contains(datetime(2026, 1, 1, 23, 30, tzinfo=UTC)) and w.contains(datetime(2026, 1, 2, 3, 59, tzinfo=UTC))
    assert not w.contains(datetime(2026, 1, 2, 4, 0, tzinfo=UTC))
    assert w.next_open(datetime(2026, 1, 2, 12, tzinfo=UTC)) == datetime(2026, 1, 2, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "zone", "field"),
    [("25:00", "01:00", "UTC", "start"), ("01:00", "1:5", "UTC", "end"), ("01:00", "02:00", "Mars/Base", "time_zone"),
     ("03:00", "03:00", "UTC", "end"), ("x", "y", "", "start")],
)  # fmt: skip
def test_bad_windows_name_the_field(start: str, end: str, zone: str, field: str) -> None:
    parsed = parse_window(start, end, zone)
    assert isinstance(parsed, list) and any(v.field == f"schedule.window.{field}" for v in parsed), parsed
