"""DownloadService over real Postgres, the real httpx fetcher and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from serve_app.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from serve_app.domain.model_jobs import DownloadStatus
from serve_app.services.downloads import DownloadService
from serve_app.storage.http_fetch import HttpFetcher
from serve_app.storage.model_job_store import PgModelJobStore
from tests.support.http_files import FileServer
from tests.support.recording_bus import RecordingBus

pytestmark = pytest.mark.timeout(60)

DATA = os.urandom(300_000)
ROUTE = "/m/weights.safetensors"


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as files:
        yield files


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
def store(pool) -> PgModelJobStore:
    return PgModelJobStore(pool)


@pytest_asyncio.fixture(loop_scope="session")
async def fetcher() -> AsyncIterator[HttpFetcher]:
    fetch = HttpFetcher(timeout_s=20)
    yield fetch
    await fetch.aclose()


def make_service(store, fetcher, bus, root, **options) -> DownloadService:
    return DownloadService(
        store, fetch=fetcher, bus=bus, allowed_roots=[root], progress_interval_s=0.0, retry_delay_s=0.0, **options
    )


@pytest_asyncio.fixture(loop_scope="session")
async def service(store, fetcher, bus, root) -> AsyncIterator[DownloadService]:
    downloads = make_service(store, fetcher, bus, root)
    yield downloads
    await downloads.aclose()


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


async def test_downloads_a_file_and_reports_events_in_order(service, server, bus, root) -> None:
    url = server.add(ROUTE, DATA)
    job = await service.download(url, root / "sub", sha256=hashlib.sha256(DATA).hexdigest().upper())
    assert job.status is DownloadStatus.WAITING  # the row exists before anything is fetched

    done = await service.wait(job.id)

    assert done.status is DownloadStatus.COMPLETED
    assert (done.bytes, done.total_bytes) == (len(DATA), len(DATA))
    assert done.download_path == str(root / "sub" / "weights.safetensors")
    assert (root / "sub" / "weights.safetensors").read_bytes() == DATA
    assert leftovers(root) == ["weights.safetensors"]
    assert done.job_started is not None and done.job_ended is not None
    events = bus.events("download_")
    assert events[0] == "download_started" and events[-1] == "download_complete"
    assert set(events[1:-1]) == {"download_progress"}
    assert bus.of("download_started")[0]["download_path"] == done.download_path
    assert bus.of("download_complete")[0]["total_bytes"] == len(DATA)
    assert all(isinstance(message.data["timestamp"], int) and message.room is None for message in bus.messages)
    assert bus.of("download_progress")[-1]["current_bytes"] == len(DATA)


async def test_file_name_from_content_disposition_is_sanitised(service, server, root) -> None:
    url = server.add("/get", DATA, disposition='attachment; filename="../../.evil.safetensors"') + "?id=1"
    done = await service.wait((await service.download(url, root)).id)
    assert done.status is DownloadStatus.COMPLETED
    assert leftovers(root) == ["evil.safetensors"]
    assert leftovers(root.parent) == ["evil.safetensors"]


async def test_explicit_filename_wins_and_redirects_carry_the_token(service, server, root) -> None:
    server.add(ROUTE, DATA)
    url = server.redirect("/short", ROUTE)
    done = await service.wait((await service.download(url, root, filename="mine.bin", access_token="tok")).id)
    assert done.status is DownloadStatus.COMPLETED
    assert (root / "mine.bin").read_bytes() == DATA
    assert [seen.authorization for seen in server.requests(ROUTE)] == ["Bearer tok"]


async def test_resumes_after_a_dropped_connection(service, server, root) -> None:
    url = server.add(ROUTE, DATA)
    server.drop_after(ROUTE, 100_000)
    done = await service.wait((await service.download(url, root)).id)
    assert done.status is DownloadStatus.COMPLETED
    assert (root / "weights.safetensors").read_bytes() == DATA
    ranges = [seen.range for seen in server.requests(ROUTE)]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) > 0


async def test_resumes_a_part_left_by_an_earlier_job(service, server, root) -> None:
    url = server.add(ROUTE, DATA)
    server.drop_after(ROUTE, 25_000, times=4)  # more breaks than retries: the job fails, its part stays
    failed = await service.wait((await service.download(url, root)).id)
    assert (failed.status, failed.error_type) == (DownloadStatus.ERROR, "ConnectionError")
    assert (root / ".weights.safetensors.part").read_bytes() == DATA[:100_000]

    done = await service.wait((await service.download(url, root)).id)
    assert done.status is DownloadStatus.COMPLETED
    assert (root / "weights.safetensors").read_bytes() == DATA
    assert server.requests(ROUTE)[-1].range == "bytes=100000-"


async def test_a_part_of_another_download_is_not_resumed(service, server, root) -> None:
    url = server.add(ROUTE, DATA)
    (root / ".weights.safetensors.part").write_bytes(b"left by someone else" * 100)
    done = await service.wait((await service.download(url, root)).id)
    assert done.status is DownloadStatus.COMPLETED
    assert (root / "weights.safetensors").read_bytes() == DATA
    assert [seen.range for seen in server.requests(ROUTE)] == [None]


async def test_starts_over_when_the_server_ignores_range(service, server, root) -> None:
    url = server.add(ROUTE, DATA, ranges=False)
    (root / ".weights.safetensors.part").write_bytes(b"garbage" * 1000)
    done = await service.wait((await service.download(url, root)).id)
    assert done.status is DownloadStatus.COMPLETED
    assert (root / "weights.safetensors").read_bytes() == DATA


async def test_checksum_mismatch_is_an_error_and_leaves_no_files(service, server, bus, root) -> None:
    url = server.add(ROUTE, DATA)
    done = await service.wait((await service.download(url, root, sha256="0" * 64)).id)
    assert done.status is DownloadStatus.ERROR
    assert done.error_type == "ChecksumMismatch"
    assert leftovers(root) == []
    assert bus.of("download_error")[0]["error_type"] == "ChecksumMismatch"
    assert "download_complete" not in bus.events()


async def test_http_404_is_an_error(service, server, root) -> None:
    done = await service.wait((await service.download(server.url("/missing.bin"), root)).id)
    assert done.status is DownloadStatus.ERROR
    assert done.error_type == "HttpStatusError" and "404" in (done.error or "")
    assert leftovers(root) == []


async def test_cancel_mid_download_removes_the_part(service, server, bus, root) -> None:
    url = server.add(ROUTE, DATA)
    gate = server.hold(ROUTE, after=1000)
    job = await service.download(url, root)
    try:
        await bus.wait_for("download_progress", current_bytes=1000)
        assert (root / ".weights.safetensors.part").exists()
        cancelled = await service.cancel(job.id)
        assert cancelled.status is DownloadStatus.CANCELLED
    finally:
        gate.set()
    done = await service.wait(job.id)
    assert done.status is DownloadStatus.CANCELLED
    assert leftovers(root) == []
    assert bus.of("download_cancelled") == [{"timestamp": bus.of("download_cancelled")[0]["timestamp"], "source": url}]
    assert (await service.cancel(job.id)).status is DownloadStatus.CANCELLED  # finished: unchanged, no new event
    assert len(bus.of("download_cancelled")) == 1


async def test_a_cancel_written_by_another_replica_stops_the_transfer(store, fetcher, server, root) -> None:
    worker_bus = RecordingBus()
    worker = make_service(store, fetcher, worker_bus, root)
    other = make_service(store, fetcher, RecordingBus(), root)
    url = server.add(ROUTE, DATA)
    gate = server.hold(ROUTE, after=1000)
    try:
        job = await worker.download(url, root)
        await worker_bus.wait_for("download_progress", current_bytes=1000)
        assert (await other.get(job.id)).bytes == 1000  # the row is all the other replica sees
        assert (await other.cancel(job.id)).status is DownloadStatus.CANCELLED
    finally:
        gate.set()
    done = await worker.wait(job.id)
    assert done.status is DownloadStatus.CANCELLED
    assert leftovers(root) == []
    assert "download_complete" not in worker_bus.events()
    await worker.aclose()
    await other.aclose()


async def test_bad_urls_and_destinations_are_refused_before_any_row(service, server, store, root, tmp_path) -> None:
    with pytest.raises(InvalidRequest):
        await service.download("ftp://example.com/x.bin", root)
    with pytest.raises(InvalidRequest):
        await service.download("file:///etc/passwd", root)
    with pytest.raises(Forbidden):
        await service.download(server.url(ROUTE), tmp_path / "elsewhere")
    with pytest.raises(Forbidden):
        await service.download(server.url(ROUTE), root / ".." / "escape")
    os.symlink(tmp_path, root / "link")
    with pytest.raises(Forbidden):
        await service.download(server.url(ROUTE), root / "link")
    assert await store.list_downloads() == []
    with pytest.raises(NotFound):
        await service.get(424242)


async def test_existing_file_conflicts_unless_overwrite(service, server, root) -> None:
    url = server.add(ROUTE, DATA)
    (root / "weights.safetensors").write_bytes(b"old")
    with pytest.raises(Conflict, match="File exists: weights.safetensors"):
        await service.download(url, root, overwrite=False)
    done = await service.wait((await service.download(url, root)).id)
    assert done.status is DownloadStatus.COMPLETED
    assert (root / "weights.safetensors").read_bytes() == DATA


async def test_a_response_without_length_is_accepted(service, server, root) -> None:
    url = server.add(ROUTE, DATA, send_length=False)
    done = await service.wait((await service.download(url, root)).id)
    assert done.status is DownloadStatus.COMPLETED
    assert (done.bytes, done.total_bytes) == (len(DATA), len(DATA))
    assert (root / "weights.safetensors").read_bytes() == DATA


async def test_lower_priority_numbers_start_first(store, fetcher, server, root) -> None:
    bus = RecordingBus()
    service = make_service(store, fetcher, bus, root, max_concurrent=1)
    gate = server.hold("/first", after=10)
    first = await service.download(server.add("/first", DATA), root)
    try:
        await bus.wait_for("download_started")
        late = await service.download(server.add("/late", DATA), root, priority=20)
        soon = await service.download(server.add("/soon", DATA), root, priority=5)
    finally:
        gate.set()
    for job in (first, late, soon):
        assert (await service.wait(job.id)).status is DownloadStatus.COMPLETED
    assert [data["source"].rsplit("/", 1)[1] for data in bus.of("download_started")] == ["first", "soon", "late"]
    await service.aclose()


async def test_list_cancel_all_and_prune(service, server, store, root) -> None:
    done = await service.wait((await service.download(server.add("/a", DATA), root, owner="u1")).id)
    gate = server.hold("/b", after=10)
    try:
        pending = await service.download(server.add("/b", DATA), root)
        assert [job.id for job in await service.list("u1")] == [done.id]
        assert len(await service.list()) == 2
        assert await service.cancel_all() == 1
    finally:
        gate.set()
    assert (await service.wait(pending.id)).status is DownloadStatus.CANCELLED
    assert await service.prune() == 2
    assert await service.list() == []


async def test_shutdown_marks_running_downloads_interrupted_and_keeps_the_part(store, fetcher, server, root) -> None:
    bus = RecordingBus()
    service = make_service(store, fetcher, bus, root)
    gate = server.hold(ROUTE, after=1000)
    try:
        job = await service.download(server.add(ROUTE, DATA), root)
        await bus.wait_for("download_progress", current_bytes=1000)
        await service.aclose()
    finally:
        gate.set()
    row = await store.get_download(job.id)
    assert (row.status, row.error_type) == (DownloadStatus.ERROR, "Interrupted")
    assert (root / ".weights.safetensors.part").read_bytes() == DATA[:1000]


async def test_server_errors_are_retried_then_reported(service, server, root) -> None:
    url = server.add("/busy.bin", DATA, status=503)
    done = await service.wait((await service.download(url, root)).id)
    assert (done.status, done.error_type) == (DownloadStatus.ERROR, "HttpServerError")
    assert len(server.requests("/busy.bin")) == 4  # the first try and three more
