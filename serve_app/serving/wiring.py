"""Builds adapters and services from typed args; shared by the deployments and the in-process stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from serve_app.api.deps import ApiContext
from serve_app.domain.ports import JobExecutor, ObjectStore
from serve_app.services.boards import BoardService
from serve_app.services.dispatcher import Dispatcher, DispatcherConfig
from serve_app.services.images import ImageService
from serve_app.services.jobs import JobGateway, JobService
from serve_app.services.models import ModelService
from serve_app.services.session_queue import SessionQueueService, StatusEvents
from serve_app.serving.args import IngressArgs, QueueArgs, StorageArgs
from serve_app.storage.change_feed import PgChangeFeed
from serve_app.storage.db import create_pool, upgrade
from serve_app.storage.event_bus import PgEventBus
from serve_app.storage.image_repository import PgImageRepository
from serve_app.storage.job_repository import PgJobRepository
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.objects import make_object_store
from serve_app.storage.session_queue_repository import PgSessionQueue

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
        events=PgEventBus(pool),
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


@contextlib.asynccontextmanager
async def ingress_runtime(args: IngressArgs, jobs: JobGateway) -> AsyncIterator[ApiContext]:
    """The API's collaborators for one Ingress replica: its own pool and LISTEN connection (so events reach
    this replica's Socket.IO clients), the InvokeAI services over them, and `jobs` for the Enfugue routes."""
    pool = await create_pool(args.database_url, min_size=1, max_size=8)
    feed = PgChangeFeed(args.database_url)
    store = build_store(args.storage)
    catalog = build_catalog(args.models_dir, args.default_model)
    bus = PgEventBus(pool)
    repo = PgJobRepository(pool)
    queue = PgSessionQueue(pool)
    images_repo = PgImageRepository(pool)
    images = ImageService(repo=images_repo, store=store, bus=bus)
    try:
        await feed.start()
        yield ApiContext(
            jobs=jobs,
            store=store,
            version=args.version,
            models=ModelService(catalog, refresh=catalog.refresh),
            events=feed,
            status_events=StatusEvents(queue),
            session_queue=SessionQueueService(
                jobs=repo,
                queue=queue,
                events=bus,
                max_queue_size=args.max_queue_size,
                max_attempts=args.max_attempts,
            ),
            images=images,
            boards=BoardService(boards=images_repo, images=images_repo, store=store),
        )
    finally:
        await images.aclose()
        await feed.stop()
        await pool.close()
