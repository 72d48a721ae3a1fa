"""Every public RPC through the TypeScript client (connect-es under Node) against the real stack.

The methods come from the generated descriptors and access.METHOD_POLICY (public: a reader's or an admin's), so a
new RPC is covered without touching this file, and fails here until tests/contract/ts/contract.ts has a case for it.
For each, the Node program sends malformed bytes (corrupt, truncated, invalid UTF-8), a wrong-typed field, the
empty request, absurd sizes, a valid request and a NOT_FOUND one, and a reader's call to admin-only methods; it
checks each answer's code and google.rpc details (ErrorInfo with the service's domain, BadRequest violations naming
the field, ResourceInfo) and reports them as JSON; nothing may answer UNKNOWN or INTERNAL.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
from pathlib import Path
from typing import Any

import plexsync.v1
import pytest
from google.protobuf.descriptor import MethodDescriptor
from plexsync.common.access import METHOD_POLICY, Role
from plexsync_client.v1 import catalog_pb2

from tests.contract.conftest import MOVIES, ROOT, Reference, tls_catalog

pytestmark = pytest.mark.timeout(600)
PROCESSES = ("catalog", "auth", "scanner", "scheduler")
EVERY_PROCESS = {"AuditService", "VersionService"}  # served by each service


def _methods() -> list[MethodDescriptor]:
    found: list[MethodDescriptor] = []
    for module in pkgutil.iter_modules(plexsync.v1.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"plexsync.v1.{module.name}").DESCRIPTOR
            for service in descriptor.services_by_name.values():
                found.extend(service.methods)
    return sorted(found, key=lambda m: m.full_name)


def _roles(method: MethodDescriptor) -> frozenset[Role]:
    return METHOD_POLICY.get(f"/{method.containing_service.full_name}/{method.name}", frozenset())


PUBLIC = [m for m in _methods() if _roles(m) & {Role.READER, Role.ADMIN}]
KEYS = [f"{m.containing_service.name}.{m.name}" for m in PUBLIC]


def _processes(method: MethodDescriptor) -> list[str]:
    service = method.containing_service.name
    return list(PROCESSES) if service in EVERY_PROCESS else [service.removesuffix("Service").lower()]


@pytest.fixture(scope="module")
def report(reference: Reference, typescript_client: Path) -> dict[str, Any]:
    stack = reference.stack
    context = {
        "addresses": {name: stack.addresses[name] for name in PROCESSES},
        "tokens": {who: stack.tokens[who] for who in ("reader", "cli")},
        "ids": {
            "serverId": reference.server_id,
            "libraryId": reference.library_id,
            "itemId": reference.item_id,
            "scanId": reference.scan_id,
            "jobId": reference.job_id,
        },
        "methods": [
            {
                "service": m.containing_service.name,
                "method": m.name,
                "identity": "reader" if Role.READER in _roles(m) else "cli",
                "processes": _processes(m),
                "adminOnly": Role.READER not in _roles(m),
            }
            for m in PUBLIC
        ],
    }
    done = subprocess.run(
        [str(typescript_client / "node_modules" / ".bin" / "tsx"), "tests/contract/ts/contract.ts"],
        cwd=ROOT,
        env={**os.environ, "CONTRACT_CONTEXT": json.dumps(context)},
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_every_public_method_is_covered(report: dict[str, Any]) -> None:
    assert len(PUBLIC) >= 40
    assert sorted(report) == sorted(KEYS)
    uncovered = [message for message in report.values() if isinstance(message, str)]
    assert not uncovered, uncovered


@pytest.mark.parametrize("key", KEYS)
def test_each_answer_has_the_right_code_and_details(report: dict[str, Any], key: str) -> None:
    outcomes = report[key]
    assert isinstance(outcomes, list), outcomes
    checks = {o["check"] for o in outcomes}
    assert {"malformed:corrupt", "malformed:truncated", "missing", "absurd"} <= checks, checks
    assert not [o["code"] for o in outcomes if o["code"] in ("UNKNOWN", "INTERNAL")], outcomes
    failed = [
        {k: o.get(k) for k in ("check", "process", "code", "message", "reason", "fieldViolations", "problems")}
        for o in outcomes
        if o["problems"]
    ]
    assert not failed, json.dumps(failed, indent=1)[:6000]


def test_the_typescript_client_typechecks(typescript_client: Path) -> None:
    """The wrapper, its examples and the contract program against the generated code (tsc --strict)."""
    done = subprocess.run(
        [str(typescript_client / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p", str(typescript_client)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:]


def _run_tsx(reference: Reference, ts: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ts / "node_modules" / ".bin" / "tsx"), f"examples/{name}", *args],
        cwd=ts,
        env={**os.environ, "PLEXSYNC_TOKEN": reference.stack.tokens["reader"]},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _example(reference: Reference, ts: Path, name: str, *args: str) -> list[str]:
    done = _run_tsx(reference, ts, name, "--insecure", *args)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.splitlines()


def test_the_examples_list_new_items_and_follow_changes(
    reference: Reference, typescript_client: Path, tmp_path: Path
) -> None:
    catalog = reference.stack.addresses["catalog"]
    with reference.client() as client:
        items = list(client.iter_items(catalog_pb2.ListItemsRequest(library_id=reference.library_id)))
        feed = client.watch_changes(from_oldest=True, library_id=reference.library_id)
        oldest = []
        for change in feed:
            oldest.append(change.item_id)
            if len(oldest) == 14:
                feed.close()
    since = ("--catalog", catalog, "--library", reference.library_id, "--page-size", "5", "--since")
    listed = _example(reference, typescript_client, "new-items.ts", *since, "2000-01-01T00:00:00Z")
    assert [line.split("\t")[0] for line in listed] == [i.id for i in items] and len(items) == MOVIES
    assert _example(reference, typescript_client, "new-items.ts", *since, "2100-01-01T00:00:00Z") == []
    state = str(tmp_path / "token")
    first = _example(reference, typescript_client, "follow-changes.ts", "--catalog", catalog, "--state", state,
                     "--from-oldest", "--max", "9")  # fmt: skip
    second = _example(reference, typescript_client, "follow-changes.ts", "--catalog", catalog, "--state", state,
                      "--max", "5")  # fmt: skip
    assert [json.loads(line)["itemId"] for line in first + second] == oldest  # resumed: nothing twice or skipped


def test_tls_verifies_the_service_with_the_ca(reference: Reference, typescript_client: Path, tmp_path: Path) -> None:
    with tls_catalog(reference, tmp_path, client_auth=False) as tls_stack:
        assert tls_stack.ca is not None
        target = ("--catalog", tls_stack.addresses["catalog"], "--library", reference.library_id)
        since = ("--since", "2000-01-01T00:00:00Z")
        listed = _run_tsx(
            reference, typescript_client, "new-items.ts", *target, *since, "--ca-file", str(tls_stack.ca.ca_file)
        )
        assert listed.returncode == 0, listed.stderr[-4000:]
        assert len(listed.stdout.splitlines()) == MOVIES
        plain = _run_tsx(reference, typescript_client, "new-items.ts", *target, *since, "--insecure")
        assert plain.returncode != 0 and plain.stdout == ""  # plain TCP to a TLS service: refused, not downgraded
