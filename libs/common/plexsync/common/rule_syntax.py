"""The sync-rule language: an expression that says which items of a library to sync.

``rating not in (R, NC-17) and resolution >= 1080`` keeps the items it is true for; the rest are EXCLUDED. It is
parsed once (errors carry the 0-based offset of the mistake), turned into a small tree of frozen dataclasses (cheap
to pickle into the listing worker) and into the proto's structured form (`plexsync.v1.SyncRule`) and back.

Grammar (keywords and field names are case-insensitive)::

    expr  := and ("or" and)*
    and   := unary ("and" unary)*
    unary := "not" unary | "(" expr ")" | cond
    cond  := FIELD OP value | FIELD ["not"] "in" "(" value ("," value)* ")"
           | FIELD ["not"] "matches" value | FIELD ("after" | "before") value
    OP    := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="

A value is a bare word (``PG-13``, ``2024-01-01``, ``1990..1999``, ``4k``) or a quoted string (``'Science Fiction'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from plexsync.v1 import common_pb2

# field -> (kind of value, operators allowed)
_EQ: Final = frozenset({"=", "!=", "in", "not in"})
_ORDER: Final = frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "not in"})
FIELDS: Final[dict[str, tuple[str, frozenset[str]]]] = {
    "rating": ("text", _EQ),
    "genre": ("text", _EQ),
    "label": ("text", _EQ),
    "collection": ("text", _EQ),
    "year": ("year", _ORDER),
    "added": ("date", frozenset({"<", "<=", ">", ">="})),
    "resolution": ("resolution", _ORDER),
    "codec": ("text", _EQ),
    "path": ("glob", frozenset({"matches", "not matches"})),
    "kind": ("kind", _EQ),
}
ALIASES: Final = {
    "content_rating": "rating",
    "contentrating": "rating",
    "added_at": "added",
    "video_codec": "codec",
    "file": "path",
    "type": "kind",
}
KINDS: Final = ("movie", "show", "season", "episode", "video")
RESOLUTIONS: Final = {"sd": 480, "480": 480, "576": 576, "720": 720, "hd": 720, "1080": 1080, "4k": 2160, "2160": 2160}
RESOLUTIONS_8K: Final = {"8k": 4320, "4320": 4320}
NEGATED: Final = {"!=": "=", "not in": "in", "not matches": "matches"}

Value = str | int | tuple[int, int]


class RuleSyntaxError(ValueError):
    """A rule expression that cannot be used; ``position`` is the 0-based offset of the mistake."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"at position {position + 1}: {message}")
        self.reason = message
        self.position = position


@dataclass(frozen=True, slots=True)
class Cond:
    """One test: ``field op values`` (one value except for ``in`` / ``not in``)."""

    field: str
    op: str
    values: tuple[Value, ...]
    raw: tuple[str, ...]  # the values as written (kept for rendering and the proto)


@dataclass(frozen=True, slots=True)
class All:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Node


Node = Cond | All | AnyOf | Not

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<op><=|>=|!=|==|=|<|>|\(|\)|,)"""
    r"""|(?P<word>[^\s()',"=<>!]+)|(?P<bad>\S))"""
)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "str", "op", "word", "end"
    text: str
    pos: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:  # only trailing blanks are left
            break
        kind = m.lastgroup or "bad"
        start = m.start(kind)
        if kind == "bad":
            char = m.group(kind)
            raise RuleSyntaxError("unterminated string" if char in "'\"" else f"unexpected character {char!r}", start)
        value = m.group(kind)
        if kind == "str":
            if len(value) < 2 or value[-1] != value[0]:
                raise RuleSyntaxError("unterminated string", start)
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append(_Tok(kind, value, start))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect_op(self, op: str, what: str) -> _Tok:
        t = self.tok
        if t.kind != "op" or t.text != op:
            raise RuleSyntaxError(f"expected {what}, found {_describe(t)}", t.pos)
        return self.take()

    def expr(self) -> Node:
        parts = [self.conj()]
        while self.tok.is_word("or"):
            self.take()
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def conj(self) -> Node:
        parts = [self.unary()]
        while self.tok.is_word("and"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def unary(self) -> Node:
        t = self.tok
        if t.is_word("not"):
            self.take()
            return Not(self.unary())
        if t.kind == "op" and t.text == "(":
            self.take()
            node = self.expr()
            self.expect_op(")", "')'")
            return node
        return self.cond()

    def cond(self) -> Cond:
        t = self.take()
        if t.kind != "word":
            raise RuleSyntaxError(f"expected a field name, found {_describe(t)}", t.pos)
        name = ALIASES.get(t.text.lower(), t.text.lower())
        if name not in FIELDS:
            raise RuleSyntaxError(f"unknown field {t.text!r} (one of {', '.join(FIELDS)})", t.pos)
        kind, allowed = FIELDS[name]
        op_tok = self.tok
        op = self._operator()
        if op not in allowed:
            raise RuleSyntaxError(f"{name} does not take {op!r} (use {', '.join(sorted(allowed))})", op_tok.pos)
        if op in ("in", "not in"):
            self.expect_op("(", "'(' after 'in'")
            raw = [self.value()]
            while self.tok.kind == "op" and self.tok.text == ",":
                self.take()
                raw.append(self.value())
            self.expect_op(")", "',' or ')'")
        else:
            raw = [self.value()]
        values = tuple(_convert(name, kind, op, v) for v in raw)
        return Cond(name, op, values, tuple(v.text for v in raw))

    def _operator(self) -> str:
        t = self.take()
        if t.kind == "op" and t.text in ("=", "==", "!=", "<", "<=", ">", ">="):
            return "=" if t.text == "==" else t.text
        if t.is_word("in", "matches"):
            return t.text.lower()
        if t.is_word("after"):
            return ">"
        if t.is_word("before"):
            return "<"
        if t.is_word("not") and self.tok.is_word("in", "matches"):
            return "not " + self.take().text.lower()
        raise RuleSyntaxError(f"expected an operator (=, !=, <, >, in, matches...), found {_describe(t)}", t.pos)

    def value(self) -> _Tok:
        t = self.take()
        if t.kind == "str" or (t.kind == "word" and t.text.lower() not in ("and", "or", "not")):
            return t
        raise RuleSyntaxError(f"expected a value, found {_describe(t)}", t.pos)


def _describe(t: _Tok) -> str:
    return "the end of the expression" if t.kind == "end" else repr(t.text)


def _convert(name: str, kind: str, op: str, t: _Tok) -> Value:
    text = t.text.strip()
    if not text:
        raise RuleSyntaxError(f"empty value for {name}", t.pos)
    if kind == "year":
        lo, sep, hi = text.partition("..")
        if sep and op not in ("=", "!=", "in", "not in"):
            raise RuleSyntaxError("a year range goes with =, != or in", t.pos)
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise RuleSyntaxError(f"expected a year or a range like 1990..1999, found {text!r}", t.pos) from None
        if not (1800 <= a <= 3000 and 1800 <= b <= 3000) or a > b:
            raise RuleSyntaxError(f"year {text!r} is out of range", t.pos)
        return (a, b) if sep else a
    if kind == "date":
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise RuleSyntaxError(f"expected a date like 2024-01-31, found {text!r}", t.pos) from None
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    if kind == "resolution":
        res = {**RESOLUTIONS, **RESOLUTIONS_8K}.get(text.lower().removesuffix("p"))
        if res is None:
            raise RuleSyntaxError(f"expected a resolution (sd, 480, 576, 720, 1080, 4k, 8k), found {text!r}", t.pos)
        return res
    if kind == "kind":
        if text.lower() not in KINDS:
            raise RuleSyntaxError(f"expected an item kind ({', '.join(KINDS)}), found {text!r}", t.pos)
        return text.lower()
    return text if kind == "glob" else text.casefold()


def parse(text: str) -> Node | None:
    """The rule tree of an expression; None for an empty one (sync everything). Raises `RuleSyntaxError`."""
    if len(text) > 4000:
        raise RuleSyntaxError("the expression is longer than 4000 characters", 4000)
    if not text.strip():
        return None
    p = _Parser(text)
    node = p.expr()
    if p.tok.kind != "end":
        raise RuleSyntaxError(f"expected 'and', 'or' or the end, found {_describe(p.tok)}", p.tok.pos)
    return node


def _quote(v: str) -> str:
    if v and re.fullmatch(r"[^\s()',\"=<>!]+", v) and v.lower() not in ("and", "or", "not", "in", "matches"):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render(node: Node, *, top: bool = True) -> str:
    """The canonical text of a rule tree (parses back to the same tree)."""
    if isinstance(node, Cond):
        vals = [_quote(v) for v in node.raw]
        if node.op in ("in", "not in"):
            return f"{node.field} {node.op} ({', '.join(vals)})"
        return f"{node.field} {node.op} {vals[0]}"
    if isinstance(node, Not):
        return f"not {render(node.part, top=False)}"
    joiner = " and " if isinstance(node, All) else " or "
    text = joiner.join(render(p, top=False) for p in node.parts)
    return text if top else f"({text})"


def conjuncts(node: Node) -> tuple[Node, ...]:
    """The top-level parts an excluded item is counted under (the parts of a top-level ``and``, else the whole)."""
    return node.parts if isinstance(node, All) else (node,)


# ---------------------------------------------------------------------------------------------- the proto form
_FIELD_ENUM: Final = {
    "rating": common_pb2.SYNC_RULE_FIELD_CONTENT_RATING,
    "genre": common_pb2.SYNC_RULE_FIELD_GENRE,
    "label": common_pb2.SYNC_RULE_FIELD_LABEL,
    "collection": common_pb2.SYNC_RULE_FIELD_COLLECTION,
    "year": common_pb2.SYNC_RULE_FIELD_YEAR,
    "added": common_pb2.SYNC_RULE_FIELD_ADDED,
    "resolution": common_pb2.SYNC_RULE_FIELD_RESOLUTION,
    "codec": common_pb2.SYNC_RULE_FIELD_VIDEO_CODEC,
    "path": common_pb2.SYNC_RULE_FIELD_PATH,
    "kind": common_pb2.SYNC_RULE_FIELD_KIND,
}
_OP_ENUM: Final = {
    "=": common_pb2.SYNC_RULE_OPERATOR_EQ,
    "!=": common_pb2.SYNC_RULE_OPERATOR_NE,
    "<": common_pb2.SYNC_RULE_OPERATOR_LT,
    "<=": common_pb2.SYNC_RULE_OPERATOR_LE,
    ">": common_pb2.SYNC_RULE_OPERATOR_GT,
    ">=": common_pb2.SYNC_RULE_OPERATOR_GE,
    "in": common_pb2.SYNC_RULE_OPERATOR_IN,
    "not in": common_pb2.SYNC_RULE_OPERATOR_NOT_IN,
    "matches": common_pb2.SYNC_RULE_OPERATOR_MATCHES,
    "not matches": common_pb2.SYNC_RULE_OPERATOR_NOT_MATCHES,
}
_FIELD_NAME: Final = {v: k for k, v in _FIELD_ENUM.items()}
_OP_NAME: Final = {v: k for k, v in _OP_ENUM.items()}


def to_proto(node: Node) -> common_pb2.SyncRule:
    if isinstance(node, Cond):
        return common_pb2.SyncRule(
            condition=common_pb2.SyncRuleCondition(
                field=_FIELD_ENUM[node.field], operator=_OP_ENUM[node.op], values=list(node.raw)
            )
        )
    if isinstance(node, Not):
        return common_pb2.SyncRule(negate=to_proto(node.part))
    group = common_pb2.SyncRuleGroup(rules=[to_proto(p) for p in node.parts])
    return common_pb2.SyncRule(all=group) if isinstance(node, All) else common_pb2.SyncRule(any=group)


def from_proto(rule: common_pb2.SyncRule, path: str = "rule") -> Node:
    """The tree of a structured rule; raises `RuleSyntaxError` whose position is 0 and whose message names the
    offending part by its path (``rule.all.rules[1].condition.values[0]``)."""
    which = rule.WhichOneof("node")
    if which == "condition":
        c = rule.condition
        name = _FIELD_NAME.get(c.field)
        op = _OP_NAME.get(c.operator)
        if name is None:
            raise RuleSyntaxError(f"{path}.condition.field: unknown field {c.field}", 0)
        kind, allowed = FIELDS[name]
        if op is None or op not in allowed:
            raise RuleSyntaxError(f"{path}.condition.operator: {name} does not take operator {c.operator}", 0)
        if not c.values or (len(c.values) > 1 and op not in ("in", "not in")):
            raise RuleSyntaxError(f"{path}.condition.values: {op!r} takes {'values' if 'in' in op else 'one value'}", 0)
        values: list[Value] = []
        for i, v in enumerate(c.values):
            try:
                values.append(_convert(name, kind, op, _Tok("str", v, 0)))
            except RuleSyntaxError as exc:
                raise RuleSyntaxError(f"{path}.condition.values[{i}]: {exc.reason}", 0) from None
        return Cond(name, op, tuple(values), tuple(c.values))
    if which == "negate":
        return Not(from_proto(rule.negate, f"{path}.negate"))
    if which in ("all", "any"):
        group = rule.all if which == "all" else rule.any
        if not group.rules:
            raise RuleSyntaxError(f"{path}.{which}.rules: empty", 0)
        parts = tuple(from_proto(r, f"{path}.{which}.rules[{i}]") for i, r in enumerate(group.rules))
        if len(parts) == 1:
            return parts[0]
        return All(parts) if which == "all" else AnyOf(parts)
    raise RuleSyntaxError(f"{path}: empty rule (set all, any, negate or condition)", 0)
