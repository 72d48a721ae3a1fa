"""Debounce and batch timeline entries, per library section, into the few writes a burst deserves.

Plex sends several entries per item within milliseconds (states 0, 1-4, 5) and bulk imports send hundreds
per second. An item is acted on once its entry is final (5 processed, 9 deleted); a section's batch is taken
when it has been quiet for ``debounce`` seconds, has waited ``max_wait`` seconds since its first entry, or
holds ``max_keys`` items — so a 1,000-item import becomes a handful of batches, and a single edit waits only
``debounce``. Items that never reach a final state (a library without an agent stops at 1) are taken once
``settle`` seconds pass without news of them. Pure: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plexsync.scanner.realtime.notifications import STATE_DELETED, TimelineEntry


@dataclass(slots=True)
class SectionBatch:
    """What to do for one section: items to fetch and write, items to check and mark missing."""

    section_key: str
    upserts: dict[str, TimelineEntry] = field(default_factory=dict)
    deletes: dict[str, TimelineEntry] = field(default_factory=dict)
    # Wall-clock time the first entry of each item arrived (the delay metric's start when Plex's own is coarse).
    received: dict[str, float] = field(default_factory=dict)
    first_at: float = 0.0
    last_at: float = 0.0

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)


class ChangeBatcher:
    def __init__(self, *, debounce: float = 0.25, max_wait: float = 1.0, max_keys: int = 500, settle: float = 3.0):
        self.debounce, self.max_wait, self.max_keys, self.settle = debounce, max_wait, max_keys, settle
        self._batches: dict[str, SectionBatch] = {}
        # Items seen in a non-final state: (entry, monotonic time of the last entry, wall time first seen).
        self._unsettled: dict[tuple[str, str], tuple[TimelineEntry, float, float]] = {}

    def add(self, entry: TimelineEntry, now: float, wall: float) -> None:
        key = (entry.section_key, entry.rating_key)
        if not entry.final:
            previous = self._unsettled.get(key)
            self._unsettled[key] = (entry, now, previous[2] if previous else wall)
            return
        unsettled = self._unsettled.pop(key, None)
        self._put(entry, now, unsettled[2] if unsettled else wall)

    def _put(self, entry: TimelineEntry, now: float, wall: float) -> None:
        batch = self._batches.get(entry.section_key)
        if batch is None:
            batch = self._batches[entry.section_key] = SectionBatch(entry.section_key, first_at=now)
        batch.last_at = now
        rk = entry.rating_key
        batch.received.setdefault(rk, wall)
        if entry.state == STATE_DELETED:
            batch.upserts.pop(rk, None)
            batch.deletes[rk] = entry
        else:
            batch.deletes.pop(rk, None)
            batch.upserts[rk] = entry

    def _settle(self, now: float) -> None:
        for key, (entry, seen, wall) in list(self._unsettled.items()):
            if now - seen >= self.settle:
                del self._unsettled[key]
                self._put(entry, seen, wall)  # quiet since `seen`: due at once

    def _due(self, batch: SectionBatch, now: float) -> bool:
        return (
            now - batch.last_at >= self.debounce or now - batch.first_at >= self.max_wait or len(batch) >= self.max_keys
        )

    def take(self, now: float) -> list[SectionBatch]:
        """The batches due now, removed from the batcher."""
        self._settle(now)
        due = [b for b in self._batches.values() if self._due(b, now)]
        for b in due:
            del self._batches[b.section_key]
        return due

    def take_all(self) -> list[SectionBatch]:
        """Everything held, final or not (at shutdown, or before a reconnect's fallback scan)."""
        for entry, seen, wall in list(self._unsettled.values()):
            self._put(entry, seen, wall)
        self._unsettled.clear()
        out = list(self._batches.values())
        self._batches.clear()
        return out

    def next_due_in(self, now: float) -> float | None:
        """Seconds until the next batch may be due, or None when nothing is held."""
        waits = [
            max(0.0, min(b.last_at + self.debounce, b.first_at + self.max_wait) - now) for b in self._batches.values()
        ]
        waits += [max(0.0, seen + self.settle - now) for _, seen, _ in self._unsettled.values()]
        return min(waits) if waits else None

    def __len__(self) -> int:
        return sum(len(b) for b in self._batches.values()) + len(self._unsettled)
