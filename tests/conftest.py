"""Fixtures shared by every test: real PostgreSQL and NATS (embedded unless DATABASE_URL / NATS_URL are set)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from plexsync.devstack import infra
from plexsync.devstack.stack import Stack, StackState

from tests.support.stack import ServiceStack, fresh_database


@pytest.fixture(scope="session")
def infra_urls() -> Iterator[tuple[str, str]]:
    """(DATABASE_URL, NATS_URL) of running servers; starts embedded ones when the environment names none."""
    if os.environ.get("DATABASE_URL") and os.environ.get("NATS_URL"):
        yield os.environ["DATABASE_URL"], os.environ["NATS_URL"]
        return
    stack = Stack(infra.DEV_DIR / f"pytest-{os.getpid()}")
    state = stack.ensure_infra(StackState())
    try:
        yield state.database_url, state.nats_url
    finally:
        stack.down()


@pytest.fixture(scope="session")
def database_server_url(infra_urls: tuple[str, str]) -> str:
    return infra_urls[0]


@pytest.fixture(scope="session")
def nats_url(infra_urls: tuple[str, str]) -> str:
    return infra_urls[1]


@pytest.fixture(scope="module")
def database_url(database_server_url: str) -> Iterator[str]:
    """An empty database of its own for each test module."""
    with fresh_database(database_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def service_stack(database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """Real service processes for a module; each test module starts the services it needs."""
    log_dir = Path(tmp_path_factory.mktemp("service-logs"))
    stack = ServiceStack(database_url=database_url, nats_url=nats_url, log_dir=log_dir)
    try:
        yield stack
    finally:
        stack.stop_all()
