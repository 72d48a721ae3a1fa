"""Path replacement (Plex's path -> where plexsync sees the file) and file state.

Rules map a path prefix as the Plex server reports it to a local prefix; the longest matching prefix
wins. A prefix matches only on a path-component boundary (``/data/tv`` does not match
``/data/tv2/x``). ``/`` and ``\\`` are interchangeable when matching; Windows-style paths (drive
letter ``D:`` or UNC ``\\\\host``) match case-insensitively, as Windows does. The remainder of the path
takes the separator style of the local prefix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from plexsync.v1 import common_pb2

State: TypeAlias = common_pb2.ItemState.ValueType
NORMAL: State = common_pb2.ITEM_STATE_NORMAL
REMOTE_ONLY: State = common_pb2.ITEM_STATE_REMOTE_ONLY
UNAVAILABLE: State = common_pb2.ITEM_STATE_UNAVAILABLE
FILE_NOT_FOUND: State = common_pb2.ITEM_STATE_FILE_NOT_FOUND

_DRIVE = re.compile(r"^[A-Za-z]:")


def is_windows_path(path: str) -> bool:
    return bool(_DRIVE.match(path)) or path.startswith("\\\\") or ("\\" in path and "/" not in path)


def _norm(path: str, windows: bool) -> str:
    """Separators unified; Windows paths lower-cased (length-preserving, so offsets stay valid)."""
    p = path.replace("\\", "/")
    if windows:
        p = "".join(c.lower() if len(c.lower()) == 1 else c for c in p)
    return p


@dataclass(frozen=True, slots=True)
class _Rule:
    plex: str
    local: str
    key: str  # normalized plex prefix without trailing separator
    windows: bool


class PathMapper:
    """Applies a server's path-replacement rules: ``PathMapper([(plex, local), ...]).map(path)``."""

    def __init__(self, rules: Iterable[tuple[str, str]] = ()) -> None:
        compiled = []
        for plex, local in rules:
            if not plex:
                continue
            windows = is_windows_path(plex)
            key = _norm(plex, windows).rstrip("/")
            compiled.append(_Rule(plex, local, key, windows))
        self._given = list(compiled)
        # Longest prefix first; ties keep the order given.
        self._rules = sorted(compiled, key=lambda r: len(r.key), reverse=True)

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def rules(self) -> list[tuple[str, str]]:
        """The rules as given (``(plex, local)``), e.g. to rebuild the mapper in another process."""
        return [(r.plex, r.local) for r in self._given]

    def map(self, path: str) -> str:
        """The local path for a Plex path (unchanged when no rule matches)."""
        if not path or not self._rules:
            return path
        found = self._match(path)
        if found is None:
            return path
        rule, rest = found
        return _join(rule.local, rest.replace("\\", "/").lstrip("/"))

    def rule_for(self, path: str) -> tuple[str, str] | None:
        """The rule ``map`` applies to a path (``(plex, local)`` as given), or None: for diagnostics."""
        found = self._match(path) if path else None
        return (found[0].plex, found[0].local) if found is not None else None

    def _match(self, path: str) -> tuple[_Rule, str] | None:
        """The longest matching rule and the rest of the path after its prefix."""
        for rule in self._rules:
            norm = _norm(path, rule.windows)
            if rule.key == "":
                if not norm.startswith("/"):
                    continue
                return rule, path[1:]
            if norm == rule.key or norm.startswith(rule.key + "/"):
                return rule, path[len(rule.key) :]
        return None


def _join(local: str, rest: str) -> str:
    if not rest:
        return local
    if is_windows_path(local):
        return local.rstrip("\\/") + "\\" + rest.replace("/", "\\")
    return local.rstrip("/") + "/" + rest


class FileStates:
    """Decides a file's state: NORMAL when the mapped path exists, else REMOTE_ONLY or UNAVAILABLE."""

    def __init__(
        self, mapper: PathMapper, *, remote_streaming: bool, exists: Callable[[str], bool] = os.path.exists
    ) -> None:
        self.mapper = mapper
        self.remote_streaming = remote_streaming
        self._exists = exists

    @property
    def portable(self) -> bool:
        """Whether another process can decide the same states (plain ``os.path.exists``, not a test's stand-in)."""
        return self._exists is os.path.exists

    def resolve(self, plex_path: str) -> tuple[str, State]:
        """(local path, ItemState) of one file."""
        local = self.mapper.map(plex_path)
        if local and self._exists(local):
            return local, NORMAL
        return local, REMOTE_ONLY if self.remote_streaming else UNAVAILABLE


def item_state(part_states: Iterable[Iterable[State]]) -> State:
    """An item's state from its media versions' part states: the best version, each as good as its
    worst part. No media at all is UNAVAILABLE."""
    rank: dict[State, int] = {NORMAL: 0, REMOTE_ONLY: 1, UNAVAILABLE: 2}
    best: State | None = None
    for version in part_states:
        states = list(version)
        if not states:
            continue
        worst = max(states, key=lambda s: rank.get(s, 2))
        if best is None or rank.get(worst, 2) < rank.get(best, 2):
            best = worst
    return best if best is not None else UNAVAILABLE
