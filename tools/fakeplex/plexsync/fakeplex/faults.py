"""Fault injection: the ways a real Plex server or network misbehaves, on demand and reproducibly.

Rules are evaluated in order for every non-control request; each draws from one seeded RNG, so the
same seed and the same request sequence give the same faults. A base latency (``--latency-ms``: the
network between a client and a real server) is a latency rule of its own that applies to every request,
survives ``reset``/``configure`` and draws its jitter from its own RNG, so it never shifts the faults'
sequence.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultKind = Literal["latency", "error", "rate_limit", "drop", "truncate", "malformed"]
FAULT_KINDS: tuple[str, ...] = ("latency", "error", "rate_limit", "drop", "truncate", "malformed")


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
