"""SIGKILL each service, and PostgreSQL, in the middle of a scan; restart it on the same port; the next sync
converges (the catalog is exactly Plex's library, nothing stuck RUNNING, lost, doubled or wrongly missing).
A killed scanner's scan is reaped by the next scanner, which publishes its `failed` event exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import psycopg
import pytest
from plexsync.scanner.events import REAPED_CODE, reaped_event_id
from plexsync.scanner.repository import REAPED_REASON
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, events_pb2

from tests.faults.harness import DEEP, FNF, Cluster, PrivateNats, eventually, running_cluster
from tests.integration.scanner.support import catalog_items

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("faults")
    nats = PrivateNats(base / "nats", base / "nats.log")  # of its own, so it can be stopped
    nats.start()
    try:
        with running_cluster(base, nats) as cluster:
            yield cluster
    finally:
        if nats.pid:
            nats.stop()


@pytest.fixture(scope="module")
async def cluster(processes: Cluster) -> AsyncIterator[Cluster]:
    await processes.login()
    await processes.converge()
    yield processes
    await processes.aclose()


async def test_a_scanner_killed_mid_scan_fails_its_scan_and_the_job_is_retried(cluster: Cluster) -> None:
    jobs = await cluster.trigger(DEEP)
    victim = await cluster.mid_scan()
    assert victim.job_id in jobs
    await cluster.kill("scanner")
    await cluster.restart("scanner")  # the new process reaps the dead one's scan at start-up
    ended = await cluster.ended(jobs, within=60)
    assert all(j.status in (common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED) for j in ended)
    # The reaper's `failed` event is no end of the job: the scheduler requeues it and the redelivery completes it.
    retried = next(j for j in ended if j.id == victim.job_id)
    assert retried.status == common_pb2.JOB_STATUS_SUCCEEDED and retried.attempt >= 2, retried
    await cluster.converge()
    dead = [s for s in await cluster.scans() if s.id == victim.id]
    assert dead and dead[0].status == common_pb2.SCAN_STATUS_FAILED, dead
    assert REAPED_REASON in dead[0].error, dead[0].error

    async def announced() -> list[events_pb2.ScanEvent] | None:
        if await cluster.outbox_depth("scanner"):
            return None  # something is still on its way; a repeat of the event could be among it
        events = await cluster.scan_lifecycle(victim.id, victim.library_id)
        return events if any(e.WhichOneof("payload") == "failed" for e in events) else None

    # The reaper announced the end no scanner else would: one `failed` event, the reaper's reason, nothing after.
    events = await eventually(announced, 30, f"the reaped scan {victim.id} has its failed event on NATS")
    assert [e.WhichOneof("payload") for e in events] == ["started", "failed"], events
    failed = events[1]
    assert failed.event_id == reaped_event_id(victim.id)
    assert failed.failed.error == dead[0].error and failed.failed.code == REAPED_CODE
    sent = (failed.job_id, failed.library_id, failed.server_id, failed.mode)
    assert sent == (victim.job_id, victim.library_id, victim.server_id, victim.mode)
    assert failed.failed.counts == dead[0].counts  # the last heartbeat's


@pytest.mark.parametrize("service", ["catalog", "auth", "scheduler"])
async def test_a_service_killed_mid_scan_and_restarted_leaves_nothing_stuck_and_the_next_sync_converges(
    cluster: Cluster, service: str
) -> None:
    jobs = await cluster.trigger(DEEP)
    await cluster.mid_scan()
    await cluster.kill(service)
    await cluster.restart(service)
    ended = await cluster.ended(jobs, within=60)
    assert all(j.status in (common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED) for j in ended)
    await cluster.converge()


async def test_postgres_killed_mid_scan_and_restarted_marks_nothing_present_missing(cluster: Cluster) -> None:
    jobs = await cluster.trigger(DEEP)
    await cluster.mid_scan()
    await cluster.kill_postgres()
    await cluster.restart_postgres()
    await cluster.ended(jobs, within=60)
    await cluster.settled(20)  # a scan whose end the dead database missed is recorded once it is back
    await cluster.converge()


async def test_nats_stopped_mid_scan_and_restarted_leaves_nothing_stuck_and_the_next_sync_converges(
    cluster: Cluster,
) -> None:
    jobs = await cluster.trigger(DEEP)
    await cluster.mid_scan()
    await cluster.stop_nats()
    await asyncio.sleep(3)
    await cluster.start_nats()
    ended = await cluster.ended(jobs, within=60)
    assert all(j.status in (common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED) for j in ended)
    await cluster.converge()


@pytest.mark.parametrize("lost", [False, True])
async def test_a_scan_stream_whose_acknowledged_batch_the_database_lost_is_refused_before_finish_scan(
    cluster: Cluster, lost: bool
) -> None:
    """What a crash of PostgreSQL leaves after an acknowledged, asynchronously committed batch: the batch's rows
    are gone while the catalog's pool reconnects and the stream goes on. Deleting the batch's `scan_seen` row
    makes that state on purpose. The stream must then end FAILED_PRECONDITION (the scanner fails the scan and
    never calls FinishScan, which would mark the batch's items FILE_NOT_FOUND); a stream that lost nothing ends
    OK, and the catalog is unchanged either way."""
    movies = next(lib for lib in await cluster.libraries() if lib.kind == common_pb2.LIBRARY_KIND_MOVIES)
    keys = sorted(await catalog_items(cluster.channel("catalog"), movies.id))
    scan_id = str(uuid.uuid4())
    acked: asyncio.Queue[int] = asyncio.Queue()

    async def batches() -> AsyncIterator[catalog_pb2.WriteItemsRequest]:
        for seq, chunk in enumerate((keys[:50], keys[50:100], keys[100:]), start=1):
            yield catalog_pb2.WriteItemsRequest(
                library_id=movies.id, scan_id=scan_id, sequence=seq, seen_rating_keys=chunk
            )
            assert await acked.get() == seq
            if seq == 1 and lost:
                with psycopg.connect(cluster.stack.database_url) as conn:
                    conn.execute("DELETE FROM catalog.scan_seen WHERE scan_id = %s", (scan_id,))

    async def stream() -> list[int]:
        catalog = catalog_pb2_grpc.CatalogServiceStub(cluster.channel("catalog", "scanner"))
        seqs = []
        async for ack in catalog.WriteItems(batches()):
            seqs.append(ack.sequence)
            acked.put_nowait(ack.sequence)
        return seqs

    if lost:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(stream(), 30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "lost 1 of scan" in (refused.value.details() or "")
    else:
        assert await asyncio.wait_for(stream(), 30) == [1, 2, 3]
    items = await catalog_items(cluster.channel("catalog"), movies.id)
    assert sorted(items) == keys and not [i for i in items.values() if i.state == FNF]
