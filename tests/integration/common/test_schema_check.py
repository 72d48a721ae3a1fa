"""With PLEXSYNC_MIGRATE_ON_START=false (Kubernetes: a Job migrates), a service checks its schema is at its code's
head and refuses to start, saying what to run, when the schema is behind."""

from __future__ import annotations

import subprocess
import sys

import pytest
from plexsync.common.migrations import SchemaBehindError
from plexsync.devstack.infra import free_port
from plexsync.scanner.migrate import MIGRATIONS

from tests.support.stack import ServiceStack


def test_a_schema_behind_the_code_is_refused_and_a_current_one_accepted(database_url: str) -> None:
    head = MIGRATIONS.head_revision()
    with pytest.raises(SchemaBehindError, match=r"scanner schema is at revision none \(empty\) but this code needs"):
        MIGRATIONS.prepare(database_url, migrate_on_start=False)
    MIGRATIONS.prepare(database_url, migrate_on_start=True)  # the dev stack's and tests' way: migrate at start
    assert MIGRATIONS.current_revision(database_url) == head
    MIGRATIONS.check_current(database_url)


def test_a_service_refuses_to_start_on_an_unmigrated_schema_and_says_so(service_stack: ServiceStack) -> None:
    env = {
        **service_stack.env("catalog"),
        "PLEXSYNC_MIGRATE_ON_START": "false",
        "PLEXSYNC_GRPC_INSECURE": "true",
        "PLEXSYNC_GRPC_HOST": "127.0.0.1",
        "PLEXSYNC_GRPC_PORT": str(free_port()),
    }
    env["DATABASE_URL"] = service_stack.database_url
    done = subprocess.run(
        [sys.executable, "-m", "plexsync.catalog"], env=env, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "catalog schema is at revision none (empty) but this code needs" in output
    assert "python -m plexsync.catalog migrate" in output
    assert "Traceback" not in output
