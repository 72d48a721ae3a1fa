"""A whole plexsync stack with synced reference data, for the clients' contract tests (TypeScript and Python).

The Python client's generated code is rebuilt from protos/ when this folder is collected (it must match the
services' `plexsync.v1`, which shares the descriptor pool with it), and the TypeScript client's by the fixture
below (npm ci when its node_modules are missing, then `buf generate`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TS_DIR = ROOT / "clients" / "typescript"


def _generate_python_client() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_plexsync_client_generate", ROOT / "clients" / "python" / "src" / "plexsync_client" / "_generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate()


_generate_python_client()

from plexsync_client import Addresses, PlexsyncClient  # noqa: E402
from plexsync_client.v1 import auth_pb2, catalog_pb2, common_pb2, scanner_pb2, scheduler_pb2  # noqa: E402

from tests.integration.scanner.support import fakeplex_process  # noqa: E402
from tests.support.stack import ServiceStack, reset_jetstream  # noqa: E402

MOVIES = 23
SPEC: dict[str, Any] = {"seed": 19, "sections": [{"kind": "movie", "title": "Contract", "count": MOVIES}]}
SCHEDULER_ENV = {
    "PLEXSYNC_SCHEDULER_TICK_SECONDS": "0.5",
    "PLEXSYNC_SCHEDULER_LEADER_POLL_SECONDS": "0.5",
    "PLEXSYNC_SCHEDULER_REFRESH_INTERVAL_SECONDS": "86400",
    "PLEXSYNC_SCHEDULER_SERVER_SYNC_SECONDS": "86400",
}


@dataclass
class Reference:
    """What the stack holds before any contract call."""

    stack: ServiceStack
    fake: dict[str, Any]
    server_id: str
    library_id: str
    item_id: str
    scan_id: str
    job_id: str

    def addresses(self) -> Addresses:
        a = self.stack.addresses
        return Addresses(catalog=a["catalog"], auth=a["auth"], scanner=a["scanner"], scheduler=a["scheduler"])

    def client(self, identity: str = "reader", **options: Any) -> PlexsyncClient:
        return PlexsyncClient(self.addresses(), token=self.stack.tokens[identity], insecure=True, **options)


@contextmanager
def tls_catalog(reference: Reference, directory: Path, *, client_auth: bool) -> Iterator[ServiceStack]:
    """A second catalog on the reference's database, serving TLS (mTLS with `client_auth`) with a dev CA."""
    stack = ServiceStack(
        database_url=reference.stack.database_url,
        nats_url=reference.stack.nats_url,
        log_dir=directory,
        tokens=reference.stack.tokens,
        extra_env=dict(reference.stack.extra_env),
    )
    stack.use_tls(directory / "ca", client_auth=client_auth)
    stack.start("catalog")
    try:
        yield stack
    finally:
        stack.stop_all()


def wait_job(admin: PlexsyncClient, job_id: str, timeout: float = 90) -> common_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job: common_pb2.Job = admin.scheduler.GetJob(scheduler_pb2.GetJobRequest(job_id=job_id)).job
        if job.status == common_pb2.JOB_STATUS_SUCCEEDED:
            return job
        assert job.status not in (common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED), job
        assert time.monotonic() < deadline, f"job not done: {job}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def reference(
    service_stack: ServiceStack, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    asyncio.run(reset_jetstream(nats_url))
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), "--library-spec", json.dumps(SPEC)) as fake:
        service_stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "t1:" + base64.b64encode(secrets.token_bytes(32)).decode()
        for name in ("catalog", "auth", "scanner", "scheduler"):
            service_stack.reserve(name)
        service_stack.start("catalog")
        service_stack.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
        service_stack.start("scanner")
        service_stack.start("scheduler", **SCHEDULER_ENV)
        ref = Reference(service_stack, fake, "", "", "", "", "")
        with ref.client("cli") as admin:
            ref.server_id = admin.auth.AddServer(
                auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="Contract")
            ).server.id
            trigger = admin.scheduler.TriggerSync(scheduler_pb2.TriggerSyncRequest(server_id=ref.server_id))
            ref.job_id = trigger.jobs[0].id
            for job in trigger.jobs:
                wait_job(admin, job.id)
            listed = admin.catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=ref.server_id))
            (library,) = listed.libraries
            ref.library_id = library.id
            ref.item_id = admin.catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=library.id)).items[0].id
            ref.scan_id = admin.scanner.ListScans(scanner_pb2.ListScansRequest(library_id=library.id)).scans[0].id
        yield ref


@pytest.fixture(scope="session")
def typescript_client() -> Path:
    """clients/typescript with its dependencies installed and its code generated from protos/."""
    if not (TS_DIR / "node_modules" / ".bin" / "tsx").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TS_DIR, check=True, timeout=600)
    subprocess.run([str(TS_DIR / "node_modules" / ".bin" / "buf"), "generate"], cwd=ROOT, check=True, timeout=120)
    return TS_DIR
