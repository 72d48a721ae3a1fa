"""Fault injection: the ways a real Plex server or network misbehaves, on demand and reproducibly.

Rules are evaluated in order for every non-control request; each draws from one seeded RNG, so the
same seed and the same request sequence give the same faults. A base latency (``--latency-ms``: the
network between a client and a real server) is a latency rule of its own that applies to every request,
survives ``reset``/``configure`` and draws its jitter from its own RNG, so it never shifts the faults'
sequence.

A ``malformed`` rule with a ``variant`` answers 200 with a realistic corruption of the real answer
(`corrupt`): what a buggy, hostile or half-broken server sends, for the scanner's robustness tests.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import orjson
from plexsync.fakeplex import render

FaultKind = Literal["latency", "error", "rate_limit", "drop", "truncate", "malformed"]
FAULT_KINDS: tuple[str, ...] = ("latency", "error", "rate_limit", "drop", "truncate", "malformed")
MalformedVariant = Literal[
    "",
    "truncated_json",
    "truncated_xml",
    "wrong_types",
    "missing_keys",
    "duplicate_keys",
    "negative_total",
    "absurd_total",
    "huge_title",
    "invalid_utf8",
    "deep_xml",
    "entity_bomb",
]
MALFORMED_VARIANTS: tuple[str, ...] = tuple(v for v in get_args(MalformedVariant) if v)
HUGE_TITLE_CHARS = 50 * 1024 * 1024
DEEP_XML_LEVELS = 10_000
ABSURD_TOTAL = 10**12
INVALID_UTF8 = b"\xff\xfe\xc3\x28\xa0"
_MARK = "fakeplex-malformed-mark"
JSON_TYPE, XML_TYPE = "application/json", "text/xml"


@dataclass(slots=True)
class FaultRule:
    """One fault. ``error`` answers ``status`` (500/503, 503 with Retry-After); ``rate_limit`` answers
    429 with ``Retry-After``; ``drop`` closes the socket without answering; ``truncate`` sends the
    headers and part of the body then closes; ``malformed`` answers 200 with a broken body. ``times``
    limits how often the rule fires (None = unlimited)."""

    kind: FaultKind
    probability: float = 1.0
    path_prefix: str = ""
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    status: int = 500
    retry_after: int = 1
    times: int | None = None
    variant: MalformedVariant = ""
    fired: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        if data.get("kind") not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {data.get('kind')!r}; expected one of {FAULT_KINDS}")
        allowed = set(cls.__dataclass_fields__) - {"fired"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        rule = cls(**data)
        if not 0.0 <= rule.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if rule.variant and (rule.kind != "malformed" or rule.variant not in MALFORMED_VARIANTS):
            raise ValueError(f"variant {rule.variant!r} needs kind 'malformed' and one of {MALFORMED_VARIANTS}")
        return rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Decision:
    delay_s: float = 0.0
    action: FaultRule | None = None  # the first non-latency rule that fired


@dataclass(slots=True)
class FaultInjector:
    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    base: FaultRule | None = None
    base_rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)
        self.base_rng.seed(self.seed)

    def set_base_latency(self, latency_ms: float, jitter_ms: float = 0.0) -> None:
        """Delay every request by ``latency_ms`` plus up to ``jitter_ms`` (0 turns it off)."""
        if latency_ms < 0 or jitter_ms < 0:
            raise ValueError("latency and jitter must not be negative")
        self.base = FaultRule("latency", latency_ms=latency_ms, jitter_ms=jitter_ms) if latency_ms else None

    def configure(self, rules: list[FaultRule], seed: int | None = None) -> None:
        self.rules = rules
        if seed is not None:
            self.seed = seed
        self.rng.seed(self.seed)

    def add(self, rule: FaultRule) -> None:
        self.rules.append(rule)

    def reset(self) -> None:
        self.rules = []
        self.rng.seed(self.seed)

    def decide(self, path: str) -> Decision:
        dec = Decision()
        base = self.base
        if base is not None:
            jitter = self.base_rng.uniform(0, base.jitter_ms) if base.jitter_ms else 0.0
            dec.delay_s = (base.latency_ms + jitter) / 1000.0
            base.fired += 1
        if not self.rules:
            return dec
        for rule in self.rules:
            if rule.path_prefix and not path.startswith(rule.path_prefix):
                continue
            if rule.times is not None and rule.fired >= rule.times:
                continue
            if rule.probability < 1.0 and self.rng.random() >= rule.probability:
                continue
            if rule.kind == "latency":
                jitter = self.rng.uniform(0, rule.jitter_ms) if rule.jitter_ms else 0.0
                dec.delay_s += (rule.latency_ms + jitter) / 1000.0
                rule.fired += 1
            elif dec.action is None:
                dec.action = rule
                rule.fired += 1
        return dec


# ----------------------------------------------------------------------------- malformed answers
@dataclass(slots=True)
class Corrupted:
    """A corrupted answer: its body, content type and the headers to change (e.g. the total size)."""

    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def corrupt(variant: str, container: dict[str, Any], *, wants_json: bool) -> Corrupted:
    """The real answer ``container`` (a MediaContainer's dict) corrupted as ``variant`` says.

    Variants named after a format (``truncated_json``, ``truncated_xml``, ``deep_xml``, ``entity_bomb``) answer in
    that format whatever ``Accept`` asked (as a server that ignores it would); the others answer in the format asked.
    Item-level variants change the first entries of ``Metadata`` (or of ``Directory``); an answer without entries
    is left as it is. Duplicates across pages need the neighbouring page and are made by the server (offset shift).
    """
    mc = orjson.loads(orjson.dumps(container))  # a deep copy: the caller's dict may be cached
    entries = _entries(mc)
    if variant == "truncated_json":
        body = render.to_json(mc)
        return Corrupted(body[: max(1, len(body) // 2)], JSON_TYPE)
    if variant == "truncated_xml":
        body = render.to_xml(mc)
        return Corrupted(body[: max(1, len(body) // 2)], XML_TYPE)
    if variant == "deep_xml":
        body = render.to_xml(mc)
        at = body.index(b">", body.index(b"<MediaContainer")) + 1
        if body[at - 2 : at] == b"/>":  # an empty container: open it
            body = body[: at - 2] + b"></MediaContainer>\n"
            at -= 1
        nest = b"<Extras>" * DEEP_XML_LEVELS + b"</Extras>" * DEEP_XML_LEVELS
        return Corrupted(body[:at] + nest + body[at:], XML_TYPE)
    if variant == "entity_bomb":
        return Corrupted(_entity_bomb(mc, entries), XML_TYPE)
    headers: dict[str, str] = {}
    if variant in ("negative_total", "absurd_total"):
        total = -1 if variant == "negative_total" else ABSURD_TOTAL
        mc["totalSize"] = total
        headers["X-Plex-Container-Total-Size"] = str(total)
    elif variant == "wrong_types" and entries:
        e = entries[0]
        e["addedAt"] = "yesterday"  # a string where a number is expected
        e["duration"] = "1h 32m"
        if isinstance(e.get("Media"), list) and e["Media"]:
            e["Media"] = e["Media"][0]  # an object where a list is expected (JSON only: XML has no lists)
        if "Genre" in e:
            e["Genre"] = {"tag": [t.get("tag") for t in e["Genre"] if isinstance(t, dict)]}
    elif variant == "missing_keys" and entries:
        entries[0].pop("ratingKey", None)
        if len(entries) > 1:
            second = entries[1]
            second.pop("Media" if "Media" in second else "type", None)
    elif variant == "duplicate_keys" and entries:
        entries.append(orjson.loads(orjson.dumps(entries[0])))
        mc["size"] = len(entries)
    elif variant == "huge_title" and entries:
        title = str(entries[0].get("title") or "Title") + " "
        entries[0]["title"] = (title * (HUGE_TITLE_CHARS // len(title) + 1))[:HUGE_TITLE_CHARS]
    elif variant == "invalid_utf8" and entries:
        entries[0]["title"] = f"{entries[0].get('title', '')} {_MARK}"
    body = render.to_json(mc) if wants_json else render.to_xml(mc)
    if variant == "invalid_utf8":
        body = body.replace(_MARK.encode(), INVALID_UTF8)
    return Corrupted(body, JSON_TYPE if wants_json else XML_TYPE, headers)


def _entries(mc: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("Metadata", "Directory"):
        value = mc.get(key)
        if isinstance(value, list):
            return value
    return []


def _entity_bomb(mc: dict[str, Any], entries: list[dict[str, Any]]) -> bytes:
    """Billion laughs: ten levels of ten references (10^9 "lol"s, ~3 GB) in a few hundred bytes."""
    lines = ['<!ENTITY lol0 "lol">']
    lines += [f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)]
    doctype = "<!DOCTYPE MediaContainer [\n " + "\n ".join(lines) + "\n]>\n"
    target = entries[0] if entries else mc
    target["title"] = _MARK
    body = render.to_xml(mc).replace(_MARK.encode(), b"&lol9;")
    decl_end = body.index(b"?>") + 3
    return body[:decl_end] + doctype.encode() + body[decl_end:]
