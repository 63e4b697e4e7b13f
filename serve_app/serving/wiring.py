"""Builds adapters and services from typed args; shared by the deployments and the in-process stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from serve_app.api.deps import ApiContext
from serve_app.domain.models import ModelRecord, ModelSpec
from serve_app.domain.ports import EventBus, JobExecutor, ObjectStore
from serve_app.services.accounts import AccountService
from serve_app.services.background import keep_leases
from serve_app.services.boards import BoardService
from serve_app.services.dispatcher import Dispatcher, DispatcherConfig
from serve_app.services.downloads import DownloadService
from serve_app.services.enfugue_intermediates import clean_previews_forever
from serve_app.services.history import HistoryService
from serve_app.services.images import ImageService
from serve_app.services.jobs import JobGateway, JobService
from serve_app.services.model_configs import to_config
from serve_app.services.model_install import InstallService
from serve_app.services.model_snapshot import ModelSnapshots
from serve_app.services.models import ModelService
from serve_app.services.presets import PresetService
from serve_app.services.session_queue import SessionQueueService, StatusEvents
from serve_app.services.settings import SettingsService
from serve_app.serving.args import IngressArgs, QueueArgs, StorageArgs
from serve_app.settings import get_settings
from serve_app.storage.account_repository import PgAccountStore
from serve_app.storage.change_feed import PgChangeFeed
from serve_app.storage.db import create_pool, upgrade
from serve_app.storage.event_bus import PgEventBus
from serve_app.storage.hf_hub import HfHubClient
from serve_app.storage.history_repository import PgInvocationHistory
from serve_app.storage.http_fetch import HttpFetcher
from serve_app.storage.image_repository import PgImageRepository
from serve_app.storage.job_repository import PgJobRepository
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.model_hash import hash_model, model_size
from serve_app.storage.model_job_store import PgModelJobStore
from serve_app.storage.model_probe import probe as probe_model
from serve_app.storage.model_registry import PgCacheStats, PgModelRegistry, PgModelSettings
from serve_app.storage.objects import FileObjectStore, S3ObjectStore, make_object_store
from serve_app.storage.passwords import Argon2Hasher
from serve_app.storage.preset_repository import PgPresetStore
from serve_app.storage.session_queue_repository import PgSessionQueue
from serve_app.storage.settings_repository import PgSettingsStore

log = logging.getLogger(__name__)

# How often listings look for models copied into the models folder by hand.
MODEL_RESYNC_INTERVAL_S = 10.0
# Download limits until `/api/settings` changes them (Enfugue's defaults).
MAX_CONCURRENT_DOWNLOADS = 2
MAX_QUEUED_DOWNLOADS = 10


def build_store(args: StorageArgs) -> ObjectStore:
    return build_listing_store(args)


def build_listing_store(args: StorageArgs) -> FileObjectStore | S3ObjectStore:
    """The store with what the port lacks: listing a folder (to delete old previews)."""
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
    registry = PgModelRegistry(pool)
    # `max_queued_invocations` from `/api/settings` replaces limits.max_waiting_jobs once set.
    settings = SettingsService(PgSettingsStore(pool), defaults={"max_queued_invocations": args.limits.max_waiting_jobs})
    service = JobService(
        repo=repo,
        catalog=build_catalog(args.models_dir, args.default_model),
        store=store,
        limits=args.limits,
        max_attempts=args.max_attempts,
        registry=registry,
        presets=PgPresetStore(pool),
        settings=settings,
        controlnet_settings=settings,  # controlnet names → repos
    )
    dispatcher = Dispatcher(
        repo=repo,
        executor=executor,
        store=store,
        feed=feed,
        events=PgEventBus(pool),
        snapshots=ModelSnapshots(registry, render=render_model_config),
        config=DispatcherConfig(
            max_in_flight=args.max_in_flight, lease_seconds=args.lease_seconds, poll_interval=args.poll_interval
        ),
        # How often Enfugue previews are stored: the `intermediate_steps` setting.
        preview_interval=settings.intermediate_steps,
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


def render_model_config(record: ModelRecord) -> dict[str, Any]:
    """A registry record as the InvokeAI config its model-load events carry."""
    return to_config(record).model_dump(mode="json")


def convert_checkpoint(spec: ModelSpec, dest: Path) -> None:
    """`PUT /api/v2/models/convert/{key}`: a single-file checkpoint rewritten as a diffusers folder. It runs in the
    Ingress process (ModelService calls it on a worker thread); torch is imported on the first conversion only."""
    from serve_app.inference.convert import convert_to_diffusers

    convert_to_diffusers(spec, dest)


def scan_models_folder(models_dir: Path) -> list[ModelSpec]:
    """Every model the folder layout of the catalog finds (main models, loras/, vae/)."""
    return DirectoryModelCatalog(models_dir, "").list()


def build_model_service(args: IngressArgs, pool: asyncpg.Pool, store: ObjectStore, bus: EventBus) -> ModelService:
    """The model registry service over this replica's pool, with the real probe, hash and folder scan."""
    return ModelService(
        PgModelRegistry(pool),
        models_dir=Path(args.models_dir),
        store=store,
        bus=bus,
        cache_stats=PgCacheStats(pool),
        settings=PgModelSettings(pool),
        probe=probe_model,
        hasher=hash_model,
        sizer=model_size,
        scan=scan_models_folder,
        converter=convert_checkpoint,
        allowed_roots=[Path(root) for root in args.model_import_roots],
        # Models copied into the folder by hand show up in listings without a restart.
        resync_interval_s=MODEL_RESYNC_INTERVAL_S,
    )


@contextlib.asynccontextmanager
async def ingress_runtime(args: IngressArgs, jobs: JobGateway) -> AsyncIterator[ApiContext]:
    """The API's collaborators for one Ingress replica: its own pool and LISTEN connection (so events reach
    this replica's Socket.IO clients), the InvokeAI services over them, and `jobs` for the Enfugue routes."""
    pool = await create_pool(args.database_url, min_size=1, max_size=8)
    feed = PgChangeFeed(args.database_url)
    store = build_store(args.storage)
    bus = PgEventBus(pool)
    models = build_model_service(args, pool, store, bus)
    repo = PgJobRepository(pool)
    queue = PgSessionQueue(pool)
    images_repo = PgImageRepository(pool)
    images = ImageService(repo=images_repo, store=store, bus=bus)
    model_jobs = PgModelJobStore(pool)
    fetcher = HttpFetcher()
    accounts = AccountService(PgAccountStore(pool), Argon2Hasher(), bus=bus)
    # Downloads may only write inside the models folder; local installs may also read the import roots.
    settings = SettingsService(
        PgSettingsStore(pool),
        defaults={
            "max_concurrent_downloads": MAX_CONCURRENT_DOWNLOADS,
            "max_queued_downloads": MAX_QUEUED_DOWNLOADS,
            # What the Queue enforces until someone sets it, so GET /api/settings shows the real limit.
            "max_queued_invocations": args.max_waiting_jobs,
            # SERVE_APP_AUTH until `auth` is posted to /api/settings (then that applies on every replica).
            "auth": args.auth,
        },
        accounts=accounts,
    )
    downloads = DownloadService(
        model_jobs,
        fetch=fetcher,
        bus=bus,
        allowed_roots=[models.models_dir],
        max_concurrent=MAX_CONCURRENT_DOWNLOADS,
        max_queued=MAX_QUEUED_DOWNLOADS,
        settings=settings,
    )
    installs = InstallService(
        model_jobs,
        downloads,
        models,
        HfHubClient(),
        bus,
        allowed_roots=[models.models_dir, *(Path(root) for root in args.model_import_roots)],
    )
    # Renews this replica's install/download leases and ends jobs a crashed replica left (services/background.py).
    leases = asyncio.create_task(keep_leases(installs, downloads), name="model-job-leases")
    # Deletes Enfugue previews older than an hour, as Enfugue's monitor (services/enfugue_intermediates.py).
    previews = asyncio.create_task(clean_previews_forever(build_listing_store(args.storage)), name="preview-cleanup")
    try:
        await feed.start()
        # Models found in the models folder (the demo models among them) are registered on every start.
        await models.sync_folder()
        if args.auth:
            await accounts.bootstrap_admin(args.admin_username, get_settings().admin_password)
        yield ApiContext(
            jobs=jobs,
            store=store,
            version=args.version,
            models=models,
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
            presets=PresetService(PgPresetStore(pool), registry=PgModelRegistry(pool)),
            installs=installs,
            downloads=downloads,
            history=HistoryService(PgInvocationHistory(pool)),
            accounts=accounts,
            auth_enabled=args.auth,
            settings=settings,
        )
    finally:
        leases.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leases
        previews.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await previews
        # Installs first: stopping one cancels its downloads.
        await installs.aclose()
        await downloads.aclose()
        await fetcher.aclose()
        await images.aclose()
        await feed.stop()
        await pool.close()
