"""Token encryption at rest with the service as a real process: ciphertexts in the database, key rotation with
``rotate-keys``, and clear start-up failures for a missing, unknown or wrong key or a ciphertext moved to another
row. Also: the client identifier is generated once and survives restarts; NATS_URL is required."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from plexsync.auth.crypto import new_key
from plexsync.common.db import libpq_url
from plexsync.devstack.process import ServiceStartError
from plexsync.v1 import auth_pb2, auth_pb2_grpc

from tests.integration.auth.conftest import FakePlexProcess, auth_env, key_spec
from tests.support.stack import ServiceStack

OLD = ("k1", new_key())
NEW = ("k2", new_key())


def call(stack: ServiceStack, identity: str, method: str, request: object) -> object:
    with grpc.insecure_channel(stack.addresses["auth"]) as channel:
        fn = getattr(auth_pb2_grpc.AuthServiceStub(channel), method)
        return fn(request, metadata=[("authorization", f"Bearer {stack.tokens[identity]}")], timeout=20)


def restart(stack: ServiceStack, env: dict[str, str]) -> None:
    for child in [c for c in stack.children if c.name == "auth"]:
        child.stop()
        stack.children.remove(child)
    stack.start("auth", **env)


def start_fails(stack: ServiceStack, env: dict[str, str]) -> str:
    for child in [c for c in stack.children if c.name == "auth"]:
        child.stop()
        stack.children.remove(child)
    with pytest.raises(ServiceStartError) as info:
        stack.start("auth", **env)
    return str(info.value)


def token_rows(database_url: str) -> list[tuple[str, str, bytes]]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute("SELECT id::text, key_id, ciphertext FROM auth.tokens ORDER BY created_at").fetchall()
    return [(r[0], r[1], bytes(r[2])) for r in rows]


@pytest.fixture(scope="module")
def added(service_stack: ServiceStack, fakeplex: FakePlexProcess) -> Iterator[str]:
    service_stack.start("auth", **auth_env(fakeplex, key_spec(OLD)))
    reply = call(
        service_stack, "cli", "AddServer", auth_pb2.AddServerRequest(url=fakeplex.local_url, token=fakeplex.token)
    )
    assert isinstance(reply, auth_pb2.AddServerResponse)
    yield reply.server.id


def credentials(stack: ServiceStack, server_id: str) -> auth_pb2.GetServerCredentialsResponse:
    reply = call(stack, "scanner", "GetServerCredentials", auth_pb2.GetServerCredentialsRequest(server_id=server_id))
    assert isinstance(reply, auth_pb2.GetServerCredentialsResponse)
    return reply


def test_tokens_are_stored_encrypted_under_the_primary_key(
    service_stack: ServiceStack, database_url: str, fakeplex: FakePlexProcess, added: str
) -> None:
    rows = token_rows(database_url)
    assert [key_id for _, key_id, _ in rows] == ["k1"]
    assert fakeplex.token.encode() not in rows[0][2]
    assert credentials(service_stack, added).token == fakeplex.token


def test_rotation_keeps_old_tokens_readable_then_rotate_keys_reencrypts(
    service_stack: ServiceStack, database_url: str, fakeplex: FakePlexProcess, added: str
) -> None:
    before = credentials(service_stack, added)
    restart(service_stack, auth_env(fakeplex, key_spec(NEW, OLD)))
    after = credentials(service_stack, added)
    assert after.token == fakeplex.token, "a ciphertext under the old key is still readable"
    assert after.client_identifier == before.client_identifier, "the client identifier is generated once"
    assert {k for _, k, _ in token_rows(database_url)} == {"k1"}

    env = {**os.environ, **service_stack.env("auth"), **auth_env(fakeplex, key_spec(NEW, OLD))}
    done = subprocess.run(
        [sys.executable, "-m", "plexsync.auth", "rotate-keys"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 1 of 1" in done.stdout and "'k2'" in done.stdout
    assert {k for _, k, _ in token_rows(database_url)} == {"k2"}
    assert fakeplex.token not in done.stdout + done.stderr

    restart(service_stack, auth_env(fakeplex, key_spec(NEW)))
    assert credentials(service_stack, added).token == fakeplex.token, "the old key is no longer needed"


def test_unknown_key_id_is_a_clear_start_up_failure(service_stack: ServiceStack, fakeplex: FakePlexProcess) -> None:
    message = start_fails(service_stack, auth_env(fakeplex, key_spec(OLD)))
    assert "'k2'" in message and "PLEXSYNC_TOKEN_KEYS" in message
    assert OLD[1] not in message and NEW[1] not in message


def test_wrong_key_under_a_known_id_is_a_clear_start_up_failure(
    service_stack: ServiceStack, fakeplex: FakePlexProcess
) -> None:
    message = start_fails(service_stack, auth_env(fakeplex, key_spec(("k2", new_key()))))
    assert "does not decrypt under key id 'k2'" in message


def test_ciphertext_moved_to_another_row_does_not_decrypt(
    service_stack: ServiceStack, database_url: str, fakeplex: FakePlexProcess
) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(
            "INSERT INTO auth.tokens (id, key_id, nonce, ciphertext) "
            "SELECT %s, key_id, nonce, ciphertext FROM auth.tokens LIMIT 1",
            (uuid.uuid4(),),
        )
    try:
        message = start_fails(service_stack, auth_env(fakeplex, key_spec(NEW)))
        assert "does not decrypt" in message
    finally:
        with psycopg.connect(libpq_url(database_url)) as conn:
            conn.execute("DELETE FROM auth.tokens WHERE id NOT IN (SELECT token_id FROM auth.servers)")
    restart(service_stack, auth_env(fakeplex, key_spec(NEW)))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"PLEXSYNC_TOKEN_KEYS": ""}, "PLEXSYNC_TOKEN_KEYS is not set"),
        ({"PLEXSYNC_TOKEN_KEYS": "k1:c2hvcnQ="}, "AES-256 needs 32"),
        ({"NATS_URL": ""}, "NATS_URL"),
    ],
)
def test_missing_or_malformed_settings_fail_fast(
    service_stack: ServiceStack, fakeplex: FakePlexProcess, override: dict[str, str], expected: str
) -> None:
    env = {**auth_env(fakeplex, key_spec(NEW)), **override}
    assert expected in start_fails(service_stack, env)
