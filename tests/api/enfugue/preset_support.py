"""Helpers for the Enfugue model tests: the models folder registered as Ingress startup registers it, and an app
whose JobService and PresetService share one registry and preset store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.domain.models import ModelRecord
from serve_app.domain.ports import ObjectStore
from serve_app.services.jobs import JobGateway, JobService
from serve_app.services.presets import PresetService
from serve_app.serving.args import StorageArgs
from serve_app.serving.wiring import build_catalog, build_store
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.model_registry import PgModelRegistry
from serve_app.storage.preset_repository import PgPresetStore
from tests.api.conftest import TEST_LIMITS


async def register_folder(pool: asyncpg.Pool, models_dir: Path) -> dict[str, ModelRecord]:
    """Register every model the folder scan finds (the demo models) with its derived key, as the registry's
    folder sync does; return them by name."""
    records = [
        ModelRecord(
            key=spec.key,
            hash=f"fingerprint:{spec.name}",
            path=spec.path,
            file_size=0,
            name=spec.name,
            base=spec.family,
            type=spec.type,
            format=spec.format,
            source=spec.path,
            config_path=spec.config_path,
        )
        for spec in DirectoryModelCatalog(models_dir, "demo-sd15").list()
    ]
    await PgModelRegistry(pool).add_missing(records)
    return {record.name: record for record in records}


def preset_client(pool: asyncpg.Pool, jobs: JobGateway, store: ObjectStore) -> httpx.AsyncClient:
    """An httpx client of an app with presets over `pool` (enter it with `async with`)."""
    presets = PresetService(PgPresetStore(pool), registry=PgModelRegistry(pool))
    context = ApiContext(jobs=jobs, store=store, version="test", presets=presets)
    app = create_app(context, max_body_bytes=64 * 1024)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve-app.test")


@asynccontextmanager
async def running_client(
    runtime: Any, pool: asyncpg.Pool, models_dir: Path, storage: StorageArgs
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the in-process stack (`runtime`: queue and graph engine) with presets, its registry holding
    `models_dir`'s models."""
    await register_folder(pool, models_dir)
    async with preset_client(pool, runtime.service, build_store(storage)) as client:
        yield client


@asynccontextmanager
async def idle_client(pool: asyncpg.Pool, repo: Any, models_dir: Path, files: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The same wiring with no dispatcher (files under `files`): jobs stay pending, their graphs can be read
    back."""
    await register_folder(pool, models_dir)
    store = build_store(StorageArgs(url=files.as_uri()))
    jobs = JobService(repo=repo, catalog=build_catalog(str(models_dir), "demo-sd15"), store=store,
                      limits=TEST_LIMITS, registry=PgModelRegistry(pool), presets=PgPresetStore(pool))  # fmt: skip
    async with preset_client(pool, jobs, store) as client:
        yield client
