"""The install and download services as the Ingress wires them, over a test's own Postgres, folders and a real
HTTP server on 127.0.0.1 (which also stands in for the Hugging Face Hub: `HfHubClient(endpoint=server)`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_app.api.deps import ApiContext
from serve_app.services.downloads import DownloadService
from serve_app.services.model_install import InstallService
from serve_app.services.models import ModelService
from serve_app.storage.hf_hub import HfHubClient
from serve_app.storage.http_fetch import HttpFetcher
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.model_hash import hash_model, model_size
from serve_app.storage.model_job_store import PgModelJobStore
from serve_app.storage.model_probe import probe
from serve_app.storage.model_registry import PgModelRegistry, PgModelSettings
from serve_app.storage.objects import FileObjectStore
from tests.support import tiny_models
from tests.support.http_files import FileServer
from tests.support.recording_bus import RecordingBus


@dataclass
class InstallStack:
    installs: InstallService
    downloads: DownloadService
    models: ModelService
    jobs: PgModelJobStore
    bus: RecordingBus
    models_dir: Path
    imports: Path
    server: FileServer
    store: FileObjectStore

    def context(self, **fields: Any) -> ApiContext:
        """An ApiContext with these services (routes outside model management are not wired)."""
        values: dict[str, Any] = {"jobs": None, "store": self.store, "version": "test", "models": self.models}
        values |= {"installs": self.installs, "downloads": self.downloads} | fields
        return ApiContext(**values)


@asynccontextmanager
async def install_stack(pool: Any, server: FileServer, root: Path, *, bus: RecordingBus | None = None,
                        models_dir: Path | None = None) -> AsyncIterator[InstallStack]:  # fmt: skip
    """Services over `pool`; the models folder is `root/models` (or `models_dir`), local installs may also read
    `root/imports`. Progress is reported on every chunk so tests see it at once."""
    models_dir = models_dir or root / "models"
    imports = root / "imports"
    models_dir.mkdir(parents=True, exist_ok=True)
    imports.mkdir(parents=True, exist_ok=True)
    bus = bus or RecordingBus()
    store = FileObjectStore(root / "objects")
    jobs = PgModelJobStore(pool)
    models = ModelService(
        PgModelRegistry(pool),
        models_dir=models_dir,
        store=store,
        bus=bus,
        cache_stats=None,
        settings=PgModelSettings(pool),
        probe=probe,
        hasher=hash_model,
        sizer=model_size,
        scan=lambda folder: DirectoryModelCatalog(folder, "").list(),
        allowed_roots=[imports],
    )
    fetch = HttpFetcher(timeout_s=20)
    downloads = DownloadService(
        jobs, fetch=fetch, bus=bus, allowed_roots=[models_dir], progress_interval_s=0.0, retry_delay_s=0.0
    )
    installs = InstallService(
        jobs,
        downloads,
        models,
        HfHubClient(endpoint=server.base_url, timeout_s=5),
        bus,
        allowed_roots=[models_dir, imports],
        progress_interval_s=0.0,
    )
    try:
        yield InstallStack(installs, downloads, models, jobs, bus, models_dir, imports, server, store)
    finally:
        await installs.aclose()
        await downloads.aclose()
        await fetch.aclose()


def build_models(root: Path) -> dict[str, Path]:
    """Tiny models to serve or copy (never to change): a peft LoRA, a diffusers textual inversion, a single-file
    SD1 checkpoint and an SD1 diffusers folder."""
    return {
        "lora": tiny_models.peft_lora(root / "lora"),
        "embedding": tiny_models.textual_inversion(root / "ti", name="tiny-ti", fmt="diffusers"),
        "checkpoint": tiny_models.sd1_single_file(root / "ckpt"),
        "pipeline": tiny_models.sd1_folder(root / "pipeline"),
    }


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def repo_files(folder: Path) -> dict[str, bytes]:
    """A model folder as a hub repo's files."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
