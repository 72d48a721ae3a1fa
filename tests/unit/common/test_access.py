"""The access policy: every RPC has an entry, readers only read, tokens parse into roles and compare safely."""

from __future__ import annotations

import importlib
import pkgutil
import re

import plexsync.v1
import pytest
from plexsync.common.access import (
    METHOD_POLICY,
    Caller,
    Role,
    TokenFormatError,
    TokenTable,
    denial_message,
    parse_service_tokens,
)

READ_VERBS = re.compile(r"^(List|Get|Search|Watch)[A-Z]")


def _rpcs() -> list[str]:
    names: list[str] = []
    for module in pkgutil.iter_modules(plexsync.v1.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"plexsync.v1.{module.name}").DESCRIPTOR
            for service in descriptor.services_by_name.values():
                names.extend(f"/{service.full_name}/{method.name}" for method in service.methods)
    return sorted(names)


RPCS = _rpcs()


def test_every_rpc_has_a_policy_entry_and_no_entry_is_stale() -> None:
    missing = [rpc for rpc in RPCS if rpc not in METHOD_POLICY]
    assert not missing, f"add these RPCs to plexsync.common.access.METHOD_POLICY: {missing}"
    stale = sorted(set(METHOD_POLICY) - set(RPCS))
    assert not stale, f"METHOD_POLICY names RPCs the protos no longer have: {stale}"
    assert all(METHOD_POLICY[rpc] for rpc in RPCS), "an entry with no role closes the method to everyone"


@pytest.mark.parametrize("rpc", RPCS)
def test_readers_may_only_read(rpc: str) -> None:
    method = rpc.rsplit("/", 1)[1]
    if Role.READER in METHOD_POLICY[rpc]:
        assert READ_VERBS.match(method), f"{method} is open to readers but is not a List/Get/Search/Watch call"


def test_internal_write_path_and_credentials_are_the_scanners_alone() -> None:
    for method in ("WriteItems", "FinishScan", "MarkItemsMissing", "GetItemEtags", "RegisterLibraries"):
        assert METHOD_POLICY[f"/plexsync.v1.CatalogService/{method}"] == {Role.SCANNER}
    assert METHOD_POLICY["/plexsync.v1.AuthService/GetServerCredentials"] == {Role.SCANNER}
    for method in ("AddServer", "RemoveServer", "StartPinLogin", "CompletePinLogin", "DiscoverServers"):
        assert METHOD_POLICY[f"/plexsync.v1.AuthService/{method}"] == {Role.ADMIN}
    assert METHOD_POLICY["/plexsync.v1.CatalogService/SetPathReplacements"] == {Role.ADMIN}
    assert METHOD_POLICY["/plexsync.v1.SchedulerService/UpdateSchedule"] == {Role.ADMIN}


def test_tokens_parse_into_roles() -> None:
    parsed = parse_service_tokens("scanner:s1, cli:c1 ,grafana@reader:g1,ops@admin:o1,dev@scanner+admin:d1,")
    assert [(t.identity, t.role, t.also) for t in parsed] == [
        ("scanner", Role.SCANNER, frozenset()),
        ("cli", Role.ADMIN, frozenset()),
        ("grafana", Role.READER, frozenset()),
        ("ops", Role.ADMIN, frozenset()),
        ("dev", Role.SCANNER, frozenset({Role.ADMIN})),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("grafana:SECRETTOKEN1", "identity 'grafana' needs a role"),
        ("grafana@root:SECRETTOKEN1", "names role 'root'"),
        ("justSECRETTOKEN1", "entry 1 must look like"),
        ("scanner:a,reader@:SECRETTOKEN1", "entry 2 must look like"),
    ],
)
def test_bad_token_entries_are_named_without_their_token(raw: str, expected: str) -> None:
    with pytest.raises(TokenFormatError, match=expected) as info:
        parse_service_tokens(raw)
    assert "SECRETTOKEN1" not in str(info.value)


def test_rotation_keeps_old_and_new_token_valid() -> None:
    table = TokenTable(parse_service_tokens("scanner:old-token,scanner:new-token,reader:other"))
    old, new = table.identify("old-token"), table.identify("new-token")
    assert old is not None and new is not None
    assert old.identity == new.identity == "scanner"
    assert table.identify("other") is not None
    for wrong in ("", "old-toke", "old-token ", "new-tokenX", "scanner"):
        assert table.identify(wrong) is None
    assert b"old-token" not in old.digest  # only the SHA-256 of a token is kept


def test_denial_names_role_method_and_who_may() -> None:
    caller = Caller("grafana", Role.READER, "ipv4:10.0.0.7:5123")
    message = denial_message(caller, "/plexsync.v1.AuthService/AddServer", frozenset({Role.ADMIN}))
    assert message == "role 'reader' (caller 'grafana') may not call AddServer; allowed roles: admin"
    several = Caller("dev", Role.SCANNER, "", frozenset({Role.ADMIN}))
    assert several.role_label == "scanner+admin"
    assert several.may_call(frozenset({Role.ADMIN})) and not caller.may_call(frozenset({Role.ADMIN}))
