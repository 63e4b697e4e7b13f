"""PgModelJobStore on real Postgres: install and download rows, partial updates, final statuses, pruning."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from serve_app.domain.errors import NotFound
from serve_app.domain.model_jobs import (
    DownloadJob,
    DownloadStatus,
    HFSource,
    InstallJob,
    InstallStatus,
    LocalSource,
    URLSource,
)
from serve_app.domain.models import ModelChanges, ModelFamily
from serve_app.domain.ports import ModelJobStore
from serve_app.storage.model_job_store import PgModelJobStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(pool) -> PgModelJobStore:
    return PgModelJobStore(pool)


def test_implements_the_port(store: PgModelJobStore) -> None:
    port: ModelJobStore = store
    assert port is store


async def test_install_roundtrip_keeps_source_and_config(store: PgModelJobStore) -> None:
    created = await store.create_install(
        InstallJob(
            id=99,
            source=HFSource(repo_id="org/name", variant="fp16", subfolder="vae"),
            config_in=ModelChanges(name="mine", base=ModelFamily.SDXL),
            local_path="/x",
        )
    )
    assert created.id != 99
    fetched = await store.get_install(created.id)
    assert fetched == created
    assert fetched.source == HFSource(repo_id="org/name", variant="fp16", subfolder="vae")
    assert fetched.config_in == ModelChanges(name="mine", base=ModelFamily.SDXL)
    assert fetched.status is InstallStatus.WAITING
    assert fetched.created_at is not None


async def test_install_update_sets_only_given_fields_and_nulls(store: PgModelJobStore) -> None:
    job = await store.create_install(InstallJob(id=0, source=URLSource(url="http://h/x.safetensors")))
    updated = await store.update_install(
        job.id, {"status": InstallStatus.ERROR, "error": "boom", "error_reason": "ValueError", "bytes": 7}
    )
    assert (updated.status, updated.error, updated.error_reason, updated.bytes) == (
        InstallStatus.ERROR, "boom", "ValueError", 7,
    )  # fmt: skip
    assert updated.source == URLSource(url="http://h/x.safetensors")
    cleared = await store.update_install(job.id, {"error": None, "source_metadata": {"a": 1}})
    assert cleared.error is None and cleared.error_reason == "ValueError"
    assert cleared.source_metadata == {"a": 1}
    assert (await store.update_install(job.id, {"source_metadata": None})).source_metadata is None


async def test_finished_status_is_final(store: PgModelJobStore) -> None:
    job = await store.create_install(InstallJob(id=0, source=LocalSource(path="/m")))
    await store.update_install(job.id, {"status": InstallStatus.CANCELLED})
    after = await store.update_install(job.id, {"status": InstallStatus.COMPLETED, "config_out_key": "k"})
    assert after.status is InstallStatus.CANCELLED
    assert after.config_out_key is None  # the whole change set was refused


async def test_unknown_ids_and_fields(store: PgModelJobStore) -> None:
    with pytest.raises(NotFound):
        await store.get_install(12345)
    with pytest.raises(NotFound):
        await store.update_install(12345, {"bytes": 1})
    with pytest.raises(NotFound):
        await store.get_download(12345)
    with pytest.raises(NotFound):
        await store.update_download(12345, {"bytes": 1})
    job = await store.create_download(DownloadJob(id=0, source="http://h/a", dest="/d"))
    with pytest.raises(ValueError, match="not updatable"):
        await store.update_download(job.id, {"id": 3})


async def test_download_roundtrip_and_update(store: PgModelJobStore) -> None:
    job = await store.create_download(
        DownloadJob(id=0, source="http://h/a.bin", dest="/d", priority=3, sha256="ab", kind="lora", owner="u1")
    )
    assert (job.status, job.priority, job.sha256, job.kind, job.owner) == (
        DownloadStatus.WAITING, 3, "ab", "lora", "u1",
    )  # fmt: skip
    started = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    updated = await store.update_download(
        job.id, {"status": DownloadStatus.RUNNING, "job_started": started, "download_path": "/d/a.bin", "bytes": 5}
    )
    assert updated.job_started == started
    assert (updated.download_path, updated.bytes, updated.total_bytes) == ("/d/a.bin", 5, 0)
    assert await store.get_download(job.id) == updated


async def test_install_parts_listing_and_pruning(store: PgModelJobStore) -> None:
    first = await store.create_install(InstallJob(id=0, source=URLSource(url="http://h/1")))
    second = await store.create_install(InstallJob(id=0, source=URLSource(url="http://h/2")))
    part = await store.create_download(DownloadJob(id=0, source="http://h/1", dest="/t", install_job_id=first.id))
    loose = await store.create_download(DownloadJob(id=0, source="http://h/3", dest="/t", owner="u2"))

    installs = await store.list_installs()
    assert [job.id for job in installs] == [first.id, second.id]
    assert [p.id for p in installs[0].download_parts] == [part.id]
    assert installs[1].download_parts == []
    assert [p.id for p in (await store.get_install(first.id)).download_parts] == [part.id]

    assert [job.id for job in await store.list_downloads()] == [part.id, loose.id]
    assert [job.id for job in await store.list_downloads(owner="u2")] == [loose.id]
    assert [job.id for job in await store.list_downloads(install_job_id=first.id)] == [part.id]

    # Pruning downloads never touches an install's parts; pruning the install takes them along.
    await store.update_download(part.id, {"status": DownloadStatus.COMPLETED})
    await store.update_download(loose.id, {"status": DownloadStatus.ERROR})
    assert await store.prune_downloads() == 1
    assert [job.id for job in await store.list_downloads()] == [part.id]
    await store.update_install(first.id, {"status": InstallStatus.COMPLETED})
    assert await store.prune_installs() == 1
    assert [job.id for job in await store.list_installs()] == [second.id]
    assert await store.list_downloads() == []


async def test_concurrent_cancel_and_complete_end_in_one_final_status(store: PgModelJobStore) -> None:
    job = await store.create_download(DownloadJob(id=0, source="http://h/a", dest="/d"))
    results = await asyncio.gather(
        store.update_download(job.id, {"status": DownloadStatus.CANCELLED}),
        store.update_download(job.id, {"status": DownloadStatus.COMPLETED}),
    )
    final = await store.get_download(job.id)
    assert final.status in (DownloadStatus.CANCELLED, DownloadStatus.COMPLETED)
    assert all(result.status is final.status for result in results)
