"""The declarative request rules: every field of every request message has one, and they say what is wrong."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import plexsync.v1
import pytest
from google.protobuf.descriptor import Descriptor
from plexsync.common import validation
from plexsync.common.errors import InvalidArgumentError
from plexsync.v1 import auth_pb2, catalog_pb2, common_pb2, scanner_pb2, scheduler_pb2


def _request_types() -> list[Descriptor]:
    found: dict[str, Descriptor] = {}
    for module in pkgutil.iter_modules(plexsync.v1.__path__):
        if module.name.endswith("_pb2"):
            for service in importlib.import_module(f"plexsync.v1.{module.name}").DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    found[method.input_type.full_name] = method.input_type
    return [found[name] for name in sorted(found)]


REQUESTS = _request_types()


@pytest.mark.parametrize("request_type", REQUESTS, ids=[r.name for r in REQUESTS])
def test_every_request_field_has_a_rule(request_type: Descriptor) -> None:
    unruled = [f.name for f in request_type.fields if validation.rule_for(request_type, f) is None]
    assert not unruled, (
        f"{request_type.full_name} fields {unruled} have no validation rule: name them by convention "
        "(plexsync.common.validation._convention) or add them to validation.RULES"
    )


def _fields(message: Any) -> dict[str, str]:
    with pytest.raises(InvalidArgumentError) as info:
        validation.check(message)
    return {v.field: v.description for v in info.value.violations}


def test_ids_urls_texts_and_lists_have_the_same_rules_everywhere() -> None:
    assert _fields(scanner_pb2.ListScansRequest(library_id="not-a-uuid")) == {
        "library_id": "must be a UUID like 123e4567-e89b-12d3-a456-426614174000"
    }
    assert "library_id" in _fields(catalog_pb2.ListItemsRequest(library_id="not-a-uuid"))
    assert _fields(auth_pb2.GetServerRequest()) == {"server_id": "must not be empty"}
    long_url = _fields(auth_pb2.AddServerRequest(url="http://h/" + "a" * 70_000))
    assert long_url == {"url": "must be at most 2048 characters (got 70009)"}
    assert _fields(auth_pb2.AddServerRequest(url="ftp://h"))["url"].startswith("must be an http")
    assert _fields(auth_pb2.AddServerRequest(url="http://h:99999"))["url"].startswith("must be an http")
    bad = _fields(scheduler_pb2.TriggerSyncRequest(all=True, reason="a\nb"))
    assert bad == {"reason": "must not contain control characters or line breaks"}
    many = catalog_pb2.MarkItemsMissingRequest(library_id="123e4567-e89b-12d3-a456-426614174000")
    many.rating_keys.extend(["1", "2", "bad key"])
    assert _fields(many) == {"rating_keys[2]": "must not contain whitespace or control characters"}


def test_secrets_are_never_echoed() -> None:
    fields = _fields(auth_pb2.AddServerRequest(url="http://h", token="SECRET token with spaces"))
    assert fields == {"token": "must not contain whitespace or control characters"}
    assert "SECRET" not in str(fields)


def test_undefined_enum_values_and_impossible_times_are_refused() -> None:
    req = scanner_pb2.ListScansRequest()
    req.status = 99  # type: ignore[assignment]
    assert _fields(req)["status"].startswith("99 is not a ScanStatus; use one of")
    kinds = catalog_pb2.GetItemEtagsRequest(library_id="123e4567-e89b-12d3-a456-426614174000")
    kinds.kinds.extend([common_pb2.ITEM_KIND_MOVIE, 1234])  # type: ignore[list-item]
    assert "kinds[1]" in _fields(kinds)
    when = catalog_pb2.ListItemsRequest()
    when.updated_since.seconds = 10**13
    assert _fields(when) == {"updated_since": "must be a time between 0001-01-01 and 9999-12-31"}


def test_a_field_of_the_wrong_wire_type_is_named() -> None:
    # field 1 of GetServerRequest is the string server_id; send it as a varint, plus an unknown field 99.
    message = auth_pb2.GetServerRequest.FromString(b"\x08\x05" + b"\x98\x06\x01")
    fields = _fields(message)
    assert fields["server_id"] == "has the wrong type: string expected"
    assert len(fields) == 1  # the unknown field 99 is ignored (a newer client's field)


def test_valid_requests_pass_and_page_size_is_not_capped_here() -> None:
    validation.check(catalog_pb2.ListItemsRequest(library_id="123e4567-e89b-12d3-a456-426614174000", page_size=10**6))
    validation.check(auth_pb2.AddServerRequest(url="https://10-0-0-5.abc.plex.direct:32400", token="abcDEF-123_x"))
    validation.check(scheduler_pb2.TriggerSyncRequest(all=True, reason="nightly"))
    assert _fields(catalog_pb2.ListItemsRequest(page_size=-1)) == {"page_size": "must be between 0 and 2147483647"}
