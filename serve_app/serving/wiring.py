"""Builds adapters and services from typed args; shared by the deployments and the in-process stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from serve_app.domain.ports import JobExecutor, ObjectStore
from serve_app.services.dispatcher import Dispatcher, DispatcherConfig
from serve_app.services.jobs import JobService
from serve_app.serving.args import QueueArgs, StorageArgs
from serve_app.storage.change_feed import PgChangeFeed
from serve_app.storage.db import create_pool, upgrade
from serve_app.storage.job_repository import PgJobRepository
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.objects import make_object_store

log = logging.getLogger(__name__)


def build_store(args: StorageArgs) -> ObjectStore:
    return make_object_store(
        args.url,
        endpoint_url=args.endpoint_url,
        region=args.region,
        access_key_id=args.access_key_id,
        secret_access_key=args.secret_access_key,
    )


def build_catalog(models_dir: str, default_model: str) -> DirectoryModelCatalog:
    return DirectoryModelCatalog(Path(models_dir), default_model)


@dataclass
class QueueRuntime:
    """The Queue's collaborators while it runs: service for callers, dispatcher in the background."""

    service: JobService
    dispatcher: Dispatcher
    repo: PgJobRepository
    task: asyncio.Task[None]

    def dispatcher_alive(self) -> bool:
        return not self.task.done()


@contextlib.asynccontextmanager
async def queue_runtime(args: QueueArgs, executor: JobExecutor) -> AsyncIterator[QueueRuntime]:
    """Open the pool and LISTEN connection, run the dispatcher; on exit give jobs back and close."""
    if args.migrate:
        # Alembic runs its own event loop; keep ours free. An advisory lock serializes replicas.
        await asyncio.to_thread(upgrade, args.database_url)
    pool = await create_pool(args.database_url, min_size=1, max_size=8)
    feed = PgChangeFeed(args.database_url)
    await feed.start()
    store = build_store(args.storage)
    repo = PgJobRepository(pool)
    service = JobService(
        repo=repo,
        catalog=build_catalog(args.models_dir, args.default_model),
        store=store,
        limits=args.limits,
        max_attempts=args.max_attempts,
    )
    dispatcher = Dispatcher(
        repo=repo,
        executor=executor,
        store=store,
        feed=feed,
        config=DispatcherConfig(
            max_in_flight=args.max_in_flight, lease_seconds=args.lease_seconds, poll_interval=args.poll_interval
        ),
    )
    task = asyncio.create_task(dispatcher.run(), name="dispatcher")
    try:
        yield QueueRuntime(service=service, dispatcher=dispatcher, repo=repo, task=task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await feed.stop()
        await pool.close()
