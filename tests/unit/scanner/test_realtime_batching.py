"""Plex notifications into batches: parsing (robust to anything), debouncing, bursts, deletes, roll-up."""

from __future__ import annotations

import orjson
from plexsync.scanner.realtime.batcher import ChangeBatcher
from plexsync.scanner.realtime.notifications import ActivityEntry, TimelineEntry, parse_message


def timeline(*entries: dict[str, object]) -> bytes:
    return orjson.dumps({"NotificationContainer": {"type": "timeline", "size": len(entries), "TimelineEntry": entries}})


def entry(rk: int, state: int, section: int = 1, type_num: int = 1) -> dict[str, object]:
    return {"identifier": "com.plexapp.plugins.library", "sectionID": str(section), "itemID": str(rk),
            "type": type_num, "state": state, "updatedAt": 1_700_000_000, "title": f"T{rk}"}  # fmt: skip


def test_parses_timeline_and_activity_and_ignores_the_rest() -> None:
    parsed = parse_message(timeline(entry(7, 0), entry(7, 5)))
    ts = 1_700_000_000
    assert parsed == [TimelineEntry("1", "7", 1, 0, ts, "T7"), TimelineEntry("1", "7", 1, 5, ts, "T7")]
    activity = {"NotificationContainer": {"type": "activity", "size": 1, "ActivityNotification": [
        {"event": "ended", "uuid": "u1", "Activity": {"type": "library.update.section", "uuid": "u1",
                                                     "Context": {"librarySectionID": "3"}}}]}}  # fmt: skip
    assert parse_message(orjson.dumps(activity)) == [ActivityEntry("ended", "u1", "library.update.section", "3")]
    for junk in (b"", b"not json", b"[]", b"{}", b'{"NotificationContainer": []}',
                 orjson.dumps({"NotificationContainer": {"type": "playing", "PlaySessionStateNotification": [{}]}}),
                 orjson.dumps({"NotificationContainer": {"type": "timeline", "TimelineEntry": "x"}}),
                 timeline({"sectionID": "1", "itemID": "../etc", "type": 1, "state": 5}),
                 timeline({"sectionID": "1", "itemID": "9", "type": 1, "state": "five"}),
                 timeline({"sectionID": -1, "itemID": "9", "type": 1, "state": 5}),
                 timeline({**entry(9, 5), "identifier": "com.plexapp.system"}),
                 timeline({**entry(9, 5), "type": 18})):  # fmt: skip
        assert parse_message(junk) == [], junk


def test_an_item_is_acted_on_once_final_and_after_the_debounce() -> None:
    b = ChangeBatcher(debounce=0.25, max_wait=1.0, settle=3.0)
    for state in (0, 1, 2, 3, 4):
        b.add(TimelineEntry("1", "7", 1, state, 0), now=0.0, wall=100.0)
    assert b.take(1.0) == []  # not final yet: nothing to fetch
    b = ChangeBatcher(debounce=0.25, max_wait=1.0)
    for state in (0, 1, 2, 3, 4, 5, 5):
        b.add(TimelineEntry("1", "7", 1, state, 0), now=0.0, wall=100.0)
    assert b.take(0.1) == []
    assert abs((b.next_due_in(0.1) or 0) - 0.15) < 1e-9
    [batch] = b.take(0.3)
    assert list(batch.upserts) == ["7"] and not batch.deletes and batch.received["7"] == 100.0
    assert len(b) == 0 and b.next_due_in(1.0) is None


def test_a_burst_becomes_few_batches_bounded_by_max_wait_and_size() -> None:
    b = ChangeBatcher(debounce=0.25, max_wait=1.0, max_keys=500)
    taken = []
    now = 0.0
    for rk in range(1, 1001):  # 1,000 items over 2 s, never quiet for 0.25 s
        now = rk * 0.002
        b.add(TimelineEntry("1", str(rk), 1, 0, 0), now, now)
        b.add(TimelineEntry("1", str(rk), 1, 5, 0), now, now)
        taken += b.take(now)
    taken += b.take(now + 1)
    assert sum(len(t) for t in taken) == 1000
    assert 2 <= len(taken) <= 4


def test_delete_wins_over_an_earlier_edit_and_sections_are_separate() -> None:
    b = ChangeBatcher(debounce=0.1)
    b.add(TimelineEntry("1", "7", 1, 5, 0), 0.0, 0.0)
    b.add(TimelineEntry("1", "7", 1, 9, 0), 0.0, 0.0)
    b.add(TimelineEntry("2", "8", 4, 5, 0), 0.0, 0.0)
    batches = {x.section_key: x for x in b.take(1.0)}
    assert list(batches["1"].deletes) == ["7"] and not batches["1"].upserts
    assert list(batches["2"].upserts) == ["8"]


def test_items_that_never_reach_a_final_state_are_taken_after_settle() -> None:
    b = ChangeBatcher(debounce=0.1, settle=3.0)
    b.add(TimelineEntry("1", "7", 1, 1, 0), 0.0, 0.0)  # a library without an agent stops at 1
    assert b.take(2.0) == []
    [batch] = b.take(3.0)
    assert list(batch.upserts) == ["7"]
    b.add(TimelineEntry("1", "9", 1, 0, 0), 0.0, 0.0)
    assert [list(x.upserts) for x in b.take_all()] == [["9"]]
