"""Plex's notification messages, read into what the watcher acts on (see shared/plex-api/notifications.md).

Every message is ``{"NotificationContainer": {"type": ..., <Array>: [...]}}``. Only two types matter for
sync: ``timeline`` entries about library items (``identifier`` ``com.plexapp.plugins.library``) and
``activity`` entries (library scans and refreshes starting and ending). Everything else, and anything
malformed, is ignored: a notification is a hint, never trusted data — the watcher fetches the item itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

LIBRARY_IDENTIFIER = "com.plexapp.plugins.library"
STATE_CREATED, STATE_PROCESSED, STATE_DELETED = 0, 5, 9
# Metadata types the catalog keeps (movie, show, season, episode; collections are the scans' business).
ITEM_TYPES = frozenset({1, 2, 3, 4})
# Activities after which Plex may have changed items of a section.
LIBRARY_ACTIVITIES = frozenset({"library.update.section", "library.refresh.items", "library.update.item.metadata"})
MAX_KEY_LENGTH = 64


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """A library item reached a state: 5 (processed: fetch it) or 9 (deleted: check it is gone)."""

    section_key: str
    rating_key: str
    type: int
    state: int
    updated_at: int
    title: str = ""

    @property
    def final(self) -> bool:
        return self.state in (STATE_PROCESSED, STATE_DELETED)


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    """Long work on the server: a section scan or refresh ``started``, ``updated`` or ``ended``."""

    event: str
    uuid: str
    type: str
    section_key: str

    @property
    def touches_library(self) -> bool:
        return self.type in LIBRARY_ACTIVITIES and bool(self.section_key)


Notification = TimelineEntry | ActivityEntry


def _key(value: Any) -> str:
    """A section or rating key as text, or "" when it is not a plausible key."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value) if value >= 0 else ""
    if isinstance(value, str) and 0 < len(value) <= MAX_KEY_LENGTH and value.isdigit():
        return value
    return ""


def _int(value: Any, default: int = -1) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return default
    return default


def _timeline(entry: dict[str, Any]) -> TimelineEntry | None:
    if entry.get("identifier", LIBRARY_IDENTIFIER) != LIBRARY_IDENTIFIER:
        return None
    section, rating_key = _key(entry.get("sectionID")), _key(entry.get("itemID"))
    type_num, state = _int(entry.get("type")), _int(entry.get("state"))
    if not section or not rating_key or type_num not in ITEM_TYPES or state < 0:
        return None
    title = entry.get("title")
    return TimelineEntry(
        section, rating_key, type_num, state, max(_int(entry.get("updatedAt"), 0), 0),
        title[:500] if isinstance(title, str) else "",
    )  # fmt: skip


def _activity(entry: dict[str, Any]) -> ActivityEntry | None:
    activity = entry.get("Activity")
    if not isinstance(activity, dict):
        return None
    context = activity.get("Context")
    section = _key(context.get("librarySectionID")) if isinstance(context, dict) else ""
    event, kind, uid = entry.get("event"), activity.get("type"), entry.get("uuid") or activity.get("uuid")
    if not isinstance(event, str) or not isinstance(kind, str):
        return None
    return ActivityEntry(event, str(uid or ""), kind, section)


def parse_message(data: str | bytes) -> list[Notification]:
    """The timeline and activity entries of one message; [] for anything else or anything malformed."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    container = message.get("NotificationContainer") if isinstance(message, dict) else None
    if not isinstance(container, dict):
        return []
    kind = container.get("type")
    if kind == "timeline":
        entries, read = container.get("TimelineEntry"), _timeline
    elif kind == "activity":
        entries, read = container.get("ActivityNotification"), _activity  # type: ignore[assignment]
    else:
        return []
    if not isinstance(entries, list):
        return []
    out: list[Notification] = []
    for entry in entries:
        if isinstance(entry, dict):
            parsed = read(entry)
            if parsed is not None:
                out.append(parsed)
    return out
