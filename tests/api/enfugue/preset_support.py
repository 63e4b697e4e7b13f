"""Helpers for the Enfugue model tests: the models folder registered as Ingress startup registers it, and an app
whose JobService and PresetService share one registry and preset store."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.domain.models import ModelRecord
from serve_app.domain.ports import ObjectStore
from serve_app.services.jobs import JobGateway
from serve_app.services.presets import PresetService
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.model_registry import PgModelRegistry
from serve_app.storage.preset_repository import PgPresetStore


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
