"""Leases on install and download jobs: a live replica keeps its jobs, a crashed replica's jobs end as errors.

A crash is a row left unfinished with no task anywhere, as a replica that died leaves it; its lease is run out
with SQL instead of waiting for it. Real Postgres, the real services, a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from serve_app.domain.model_jobs import DownloadJob, DownloadStatus, InstallJob, InstallStatus, URLSource
from serve_app.services.background import INTERRUPTED, INTERRUPTED_MESSAGE, LEASE_S
from tests.support.http_files import FileServer
from tests.support.install_stack import InstallStack, install_stack

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as files:
        yield files


@pytest_asyncio.fixture(loop_scope="session")
async def env(pool, server, tmp_path) -> AsyncIterator[InstallStack]:
    async with install_stack(pool, server, tmp_path) as stack:
        yield stack


async def _expire(pool: Any, table: str, job_id: int) -> None:
    await pool.execute(f"UPDATE {table} SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job_id)


async def _seconds_left(pool: Any, table: str, job_id: int) -> float:
    left: float = await pool.fetchval(
        f"SELECT extract(epoch FROM lease_expires_at - now()) FROM {table} WHERE id = $1", job_id
    )
    return left


async def test_a_new_row_starts_with_a_lease(env: InstallStack, pool) -> None:
    job = await env.jobs.create_install(InstallJob(id=0, source=URLSource(url="http://h/x.safetensors")))
    assert 0 < await _seconds_left(pool, "model_install_jobs", job.id) <= 120


async def test_jobs_a_crashed_replica_left_end_as_errors_with_events(env: InstallStack, pool) -> None:
    install = await env.jobs.create_install(
        InstallJob(id=0, status=InstallStatus.DOWNLOADING, source=URLSource(url="http://h/x.safetensors"))
    )
    part = await env.jobs.create_download(
        DownloadJob(
            id=0,
            source="http://h/x.safetensors",
            dest=str(env.models_dir),
            install_job_id=install.id,
            status=DownloadStatus.RUNNING,
        )
    )
    fresh = await env.jobs.create_install(InstallJob(id=0, source=URLSource(url="http://h/y.safetensors")))
    done = await env.jobs.create_install(InstallJob(id=0, source=URLSource(url="http://h/z.safetensors")))
    await env.jobs.update_install(done.id, {"status": InstallStatus.COMPLETED})
    for table, job_id in (("model_install_jobs", install.id), ("download_jobs", part.id),
                          ("model_install_jobs", done.id)):  # fmt: skip
        await _expire(pool, table, job_id)

    await env.installs.keep_leases()
    await env.downloads.keep_leases()

    reaped = await env.jobs.get_install(install.id)
    assert (reaped.status, reaped.error_reason, reaped.error) == (InstallStatus.ERROR, INTERRUPTED,
                                                                  INTERRUPTED_MESSAGE)  # fmt: skip
    reaped_part = await env.jobs.get_download(part.id)
    assert (reaped_part.status, reaped_part.error_type) == (DownloadStatus.ERROR, INTERRUPTED)
    assert reaped_part.job_ended is not None
    # A job whose lease has not run out, and a finished one, are left as they are.
    assert (await env.jobs.get_install(fresh.id)).status is InstallStatus.WAITING
    assert (await env.jobs.get_install(done.id)).status is InstallStatus.COMPLETED
    assert [event["id"] for event in env.bus.of("model_install_error")] == [install.id]
    assert [event["error_type"] for event in env.bus.of("download_error")] == [INTERRUPTED]
    # Reaped once: a second round finds nothing more.
    await env.installs.keep_leases()
    assert len(env.bus.of("model_install_error")) == 1


async def test_a_running_job_keeps_its_lease_and_is_never_reaped(env: InstallStack, server, pool) -> None:
    url = server.add("/m/big.safetensors", os.urandom(200_000))
    gate = server.hold("/m/big.safetensors", after=1000)
    try:
        job = await env.downloads.download(url, env.models_dir)
        await env.bus.wait_for("download_progress", current_bytes=1000)
        await _expire(pool, "download_jobs", job.id)
        # The replica running it renews before anyone reaps (each Ingress runs both in one loop).
        await env.downloads.keep_leases()
        assert await _seconds_left(pool, "download_jobs", job.id) > LEASE_S - 10
        assert (await env.downloads.get(job.id)).status is DownloadStatus.RUNNING
    finally:
        gate.set()
    assert (await env.downloads.wait(job.id)).status is DownloadStatus.COMPLETED
    assert "download_error" not in env.bus.events()


async def test_a_reaped_job_stays_an_error_when_its_replica_reports_late(env: InstallStack, pool) -> None:
    install = await env.jobs.create_install(
        InstallJob(id=0, status=InstallStatus.RUNNING, source=URLSource(url="http://h/x.safetensors"))
    )
    await _expire(pool, "model_install_jobs", install.id)
    await env.installs.keep_leases()
    # A replica that was only slow, not dead, cannot bring the job back: a finished status is final.
    late = await env.jobs.update_install(install.id, {"status": InstallStatus.COMPLETED})
    assert late.status is InstallStatus.ERROR
