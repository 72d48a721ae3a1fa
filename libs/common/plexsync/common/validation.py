"""Declarative request validation: every field of every request message has a rule, checked before any handler.

The same kind of field gets the same rule everywhere (ids are UUIDs, URLs are http(s) and bounded, names and texts
are bounded single lines, enums must be defined values, timestamps must be representable, lists are bounded). Most
rules follow from a field's name and type (`CONVENTIONS`); the rest are written per message in `RULES`. A unit test
(tests/unit/common/test_validation.py) fails when a field of any request message resolves to no rule, so a new field
cannot be left unchecked. Handlers and domain code still check what only they can know (a required combination,
whether an id exists, what a mask may change).

A field sent with the wrong wire type (a number where a string belongs) is kept by protobuf as an unknown field with a
known number: that is INVALID_ARGUMENT naming the field. Unknown numbers are ignored, as protobuf intends, so a newer
client still talks to an older server.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, cast
from urllib.parse import urlsplit

import grpc
from google.protobuf import unknown_fields
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from plexsync.common.errors import FieldViolation, InvalidArgumentError
from plexsync.common.interceptors import run_first, wrap_async_behavior

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_MASK_PATHS = 100
MAX_FALLBACK_TEXT = 64 * 1024


class Rule:
    """Checks one field's value; `problem` returns what is wrong, or None. Never echoes the value."""

    kind = "rule"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class Uuid(Rule):
    required: bool = False
    kind = "uuid"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        if not value:
            return "must not be empty" if self.required else None
        if len(value) > 64:
            return f"must be a UUID (got a value of {len(value)} characters)"
        try:
            uuid.UUID(value)
        except ValueError:
            return "must be a UUID like 123e4567-e89b-12d3-a456-426614174000"
        return None


@dataclass(frozen=True)
class Text(Rule):
    max_length: int
    required: bool = False
    multiline: bool = False
    kind = "text"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        if not value:
            return "must not be empty" if self.required else None
        if len(value) > self.max_length:
            return f"must be at most {self.max_length} characters (got {len(value)})"
        if (_CONTROL if self.multiline else _CONTROL_OR_NEWLINE).search(value):
            return "must not contain control characters" + ("" if self.multiline else " or line breaks")
        return None


@dataclass(frozen=True)
class Secret(Rule):
    """A credential: bounded, printable, no whitespace. Messages never show any of it."""

    max_length: int = 4096
    kind = "secret"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        if not value:
            return None
        if len(value) > self.max_length:
            return f"must be at most {self.max_length} characters"
        if _WHITESPACE_OR_CONTROL.search(value):
            return "must not contain whitespace or control characters"
        return None


@dataclass(frozen=True)
class Key(Rule):
    """A Plex rating key or similar opaque short key."""

    max_length: int = 255
    kind = "key"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        if not value:
            return "must not be empty"
        if len(value) > self.max_length:
            return f"must be at most {self.max_length} characters (got {len(value)})"
        if _WHITESPACE_OR_CONTROL.search(value):
            return "must not contain whitespace or control characters"
        return None


@dataclass(frozen=True)
class Url(Rule):
    max_length: int = 2048
    required: bool = False
    kind = "url"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        if not value:
            return "must not be empty" if self.required else None
        if len(value) > self.max_length:
            return f"must be at most {self.max_length} characters (got {len(value)})"
        if _WHITESPACE_OR_CONTROL.search(value):
            return "must not contain whitespace or control characters"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            return "must be an http:// or https:// URL"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "must be an http:// or https:// URL with a host"
        return None


@dataclass(frozen=True)
class Number(Rule):
    minimum: int
    maximum: int
    kind = "number"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        if not self.minimum <= value <= self.maximum:
            return f"must be between {self.minimum} and {self.maximum}"
        return None


@dataclass(frozen=True)
class EnumValue(Rule):
    kind = "enum"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        enum = field.enum_type
        if enum is not None and value not in enum.values_by_number:
            names = ", ".join(v.name for v in enum.values if v.number != 0)
            return f"{value} is not a {enum.name}; use one of {names}"
        return None


@dataclass(frozen=True)
class AnyValue(Rule):
    """A value every bit pattern of which is meaningful (booleans)."""

    kind = "any"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        return None


@dataclass(frozen=True)
class Timestamp(Rule):
    kind = "timestamp"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS or not 0 <= value.nanos < 10**9:
            return "must be a time between 0001-01-01 and 9999-12-31"
        return None


@dataclass(frozen=True)
class Duration(Rule):
    max_seconds: int = 86_400
    kind = "duration"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        if value.seconds < 0 or value.nanos < 0 or value.nanos >= 10**9:
            return "must not be negative"
        if value.seconds > self.max_seconds:
            return f"must be at most {self.max_seconds} seconds"
        return None


@dataclass(frozen=True)
class Mask(Rule):
    """An AIP-134 update mask: bounded; which paths are updatable is the handler's to say."""

    kind = "field_mask"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        if len(value.paths) > MAX_MASK_PATHS:
            return f"must name at most {MAX_MASK_PATHS} paths"
        for path in value.paths:
            if not path or len(path) > 128 or _WHITESPACE_OR_CONTROL.search(path):
                return "paths must be field names"
        return None


@dataclass(frozen=True)
class Nested(Rule):
    """A message-typed field checked by the domain code that owns it (`by` says which), not field by field here."""

    by: str
    kind = "nested"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        return None


@dataclass(frozen=True)
class Each(Rule):
    """A repeated field: at most `max_items`, each checked by `item`."""

    item: Rule
    max_items: int
    kind = "repeated"

    def problem(self, value: Any, field: FieldDescriptor) -> str | None:
        return None  # checked element by element in `violations`

    def describe(self) -> str:
        return f"repeated {self.item.describe()} (at most {self.max_items})"


PAGE_SIZE = Number(0, 2**31 - 1)  # above the maximum is clamped (AIP-158), not refused
TOKEN_TEXT = Text(4096)
NAME = Text(256)
ID = Uuid()
REQUIRED_ID = Uuid(required=True)
RATING_KEYS = Each(Key(), 200_000)

# Message-specific rules (full message name -> field -> rule); they win over the conventions below.
RULES: dict[str, dict[str, Rule]] = {
    "plexsync.v1.CompletePinLoginRequest": {"pin_id": Number(0, 2**63 - 1), "timeout": Duration(600)},
    "plexsync.v1.CancelPinLoginRequest": {"pin_id": Number(0, 2**63 - 1)},
    "plexsync.v1.AddServerRequest": {"url": Url(required=True)},
    "plexsync.v1.DiscoverServersRequest": {"account_id": Text(64)},
    "plexsync.v1.GetServerRequest": {"server_id": REQUIRED_ID},
    "plexsync.v1.RemoveServerRequest": {"server_id": REQUIRED_ID},
    "plexsync.v1.GetServerCredentialsRequest": {"server_id": REQUIRED_ID},
    "plexsync.v1.RegisterLibrariesRequest": {
        "server_id": REQUIRED_ID,
        "sections": Each(Nested("the catalog's library registration"), 10_000),
    },
    "plexsync.v1.GetLibraryRequest": {"library_id": REQUIRED_ID},
    "plexsync.v1.UpdateLibraryRequest": {"library": Nested("the catalog's library update, with update_mask")},
    "plexsync.v1.SetPathReplacementsRequest": {
        "server_id": REQUIRED_ID,
        "rules": Each(Nested("the catalog's path rule checks"), 500),
    },
    "plexsync.v1.GetItemEtagsRequest": {"library_id": REQUIRED_ID},
    "plexsync.v1.WriteItemsRequest": {
        "sequence": Number(0, 2**63 - 1),
        "items": Each(Nested("the catalog's ingest, field by field"), 100_000),
        "collections": Each(Nested("the catalog's ingest"), 100_000),
        "seen_rating_keys": RATING_KEYS,
        "excluded_rating_keys": RATING_KEYS,
    },
    "plexsync.v1.SetLibraryRulesRequest": {
        "library_id": REQUIRED_ID,
        "expression": Text(4000, multiline=True),
        "rule": Nested("the catalog's sync-rule parser"),
    },
    "plexsync.v1.TestRulesRequest": {
        "library_id": REQUIRED_ID,
        "expression": Text(4000, multiline=True),
        "sample_size": Number(0, 1000),
    },
    "plexsync.v1.FinishScanRequest": {"library_id": REQUIRED_ID, "scan_id": REQUIRED_ID},
    "plexsync.v1.GetItemRequest": {"item_id": REQUIRED_ID},
    "plexsync.v1.SearchItemsRequest": {"query": Text(500)},
    "plexsync.v1.MarkItemsMissingRequest": {"library_id": REQUIRED_ID, "rating_keys": RATING_KEYS},
    "plexsync.v1.SyncServerRequest": {"server_id": REQUIRED_ID},
    "plexsync.v1.ScanLibraryRequest": {"library_id": REQUIRED_ID},
    "plexsync.v1.GetScanRequest": {"scan_id": REQUIRED_ID},
    "plexsync.v1.CancelScanRequest": {"scan_id": REQUIRED_ID},
    "plexsync.v1.WatchScanRequest": {"scan_id": REQUIRED_ID},
    "plexsync.v1.TriggerSyncRequest": {"reason": Text(500)},
    "plexsync.v1.GetJobRequest": {"job_id": REQUIRED_ID},
    "plexsync.v1.CancelJobRequest": {"job_id": REQUIRED_ID},
    "plexsync.v1.GetScheduleRequest": {"library_id": REQUIRED_ID},
    "plexsync.v1.ListAuditEventsRequest": {
        "action": Text(128),
        "actor_identity": Text(128),
        "resource_type": Text(128),
        "resource_id": Text(256),
    },
    "plexsync.v1.TestPathsRequest": {"library_id": REQUIRED_ID, "sample_size": Number(0, 1000)},
    "plexsync.v1.UpdateScheduleRequest": {"schedule": Nested("the scheduler's schedule update, with update_mask")},
}


def _convention(field: FieldDescriptor) -> Rule | None:
    """The rule a field gets from its name and type alone; None when neither says."""
    name = field.name
    repeated = field.is_repeated
    if field.type == FieldDescriptor.TYPE_MESSAGE and not repeated:
        message = field.message_type.full_name if field.message_type else ""
        return {
            "google.protobuf.Timestamp": Timestamp(),
            "google.protobuf.Duration": Duration(),
            "google.protobuf.FieldMask": Mask(),
        }.get(message)
    if field.type == FieldDescriptor.TYPE_BOOL and not repeated:
        return AnyValue()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return Each(EnumValue(), 100) if repeated else EnumValue()
    if field.type != FieldDescriptor.TYPE_STRING:
        return PAGE_SIZE if name == "page_size" else None
    if repeated:
        return Each(ID, 1000) if name.endswith("_ids") else None
    if name in ("page_token", "resume_token"):
        return TOKEN_TEXT
    if name == "id" or name.endswith("_id"):
        return ID
    if name == "url" or name.endswith("_url"):
        return Url()
    if name == "token":
        return Secret()
    if name in ("name", "title") or name.endswith("_name"):
        return NAME
    return None


def rule_for(message: Descriptor, field: FieldDescriptor) -> Rule | None:
    """The rule for one field: the message's own entry in RULES, else the convention."""
    return RULES.get(message.full_name, {}).get(field.name) or _convention(field)


_FALLBACK = Text(MAX_FALLBACK_TEXT, multiline=True)


@cache
def _field_rules(descriptor: Descriptor) -> tuple[tuple[FieldDescriptor, Rule], ...]:
    """Each field of a message with its rule, worked out once per message type (requests are on a hot path)."""
    resolved: list[tuple[FieldDescriptor, Rule]] = []
    for field in cast(list[FieldDescriptor], list(descriptor.fields)):
        rule = rule_for(descriptor, field)
        if rule is None:  # the unit test keeps this from happening; a bounded check rather than none if it does
            text = field.type == FieldDescriptor.TYPE_STRING
            rule = (Each(_FALLBACK if text else AnyValue(), 100_000) if field.is_repeated else
                    _FALLBACK if text else AnyValue())  # fmt: skip
        resolved.append((field, rule))
    return tuple(resolved)


def violations(message: Message) -> list[FieldViolation]:
    """Every rule the message breaks, as BadRequest field violations (paths like `sections[2]`)."""
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    found: list[FieldViolation] = []
    by_number: dict[int, FieldDescriptor] = dict(descriptor.fields_by_number)
    wrong_type: set[str] = set()
    unknown_set = unknown_fields.UnknownFieldSet(message)
    for position in range(len(unknown_set)):
        known = by_number.get(unknown_set[position].field_number)
        if known is not None and known.name not in wrong_type:
            wrong_type.add(known.name)
            found.append(FieldViolation(known.name, f"has the wrong type: {_type_name(known)} expected"))
    for field, rule in _field_rules(descriptor):
        if field.name in wrong_type:
            continue
        value = getattr(message, field.name)
        if isinstance(rule, Each):
            if len(value) > rule.max_items:
                found.append(
                    FieldViolation(field.name, f"must have at most {rule.max_items} entries (got {len(value)})")
                )
            elif not isinstance(rule.item, Nested | AnyValue):  # those check nothing element by element
                for index, element in enumerate(value):
                    problem = rule.item.problem(element, field)
                    if problem:
                        found.append(FieldViolation(f"{field.name}[{index}]", problem))
                        break  # one per list is enough to act on
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated and not message.HasField(field.name):
            continue
        problem = rule.problem(value, field)
        if problem:
            found.append(FieldViolation(field.name, problem))
    return found


def _type_name(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        kind = field.message_type.name
    elif field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        kind = field.enum_type.name
    else:
        kind = {
            FieldDescriptor.TYPE_STRING: "string",
            FieldDescriptor.TYPE_BYTES: "bytes",
            FieldDescriptor.TYPE_BOOL: "bool",
            FieldDescriptor.TYPE_DOUBLE: "double",
            FieldDescriptor.TYPE_FLOAT: "float",
        }.get(field.type, "integer")
    return f"repeated {kind}" if field.is_repeated else kind


def check(message: Any) -> None:
    """Raise InvalidArgumentError listing every broken rule of `message` (a protobuf message)."""
    if not isinstance(message, Message):
        return
    found = violations(message)
    if found:
        raise InvalidArgumentError(found)


def _checked(request: Any) -> Any:
    check(request)
    return request


async def _validated_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        check(request)
        yield request


class RequestValidationInterceptor(grpc.aio.ServerInterceptor):
    """Checks every request (and every message of a request stream) against its rules before the handler.

    Installed inside the auth and error-mapping interceptors, so an InvalidArgumentError it raises becomes
    INVALID_ARGUMENT with BadRequest details, and only authenticated, authorised callers learn the rules."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith("/plexsync."):
            return handler
        return wrap_async_behavior(
            handler, lambda behavior, streaming: run_first(behavior, _validated_stream if streaming else _checked)
        )
