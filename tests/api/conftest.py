"""An in-process stack for API tests: real Postgres, real files, real tiny models, no Ray.

The app, JobService, repository, dispatcher and executor are the production classes, wired by
`serve_app.serving.wiring.queue_runtime` exactly as the Queue deployment wires them; only the
executor runs in this process instead of behind a Ray handle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.domain.generation import Limits
from serve_app.inference.executor import InProcessExecutor
from serve_app.inference.loading import pick_device
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.runner import GenerationRunner
from serve_app.inference.tiny import ensure_demo_models
from serve_app.serving.args import QueueArgs, StorageArgs
from serve_app.serving.wiring import QueueRuntime, build_catalog, build_store, queue_runtime

TEST_LIMITS = Limits(max_width=512, max_height=512, max_pixels=512 * 512, max_steps=50, max_images_per_job=4,
                     max_waiting_jobs=3)  # fmt: skip


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    ensure_demo_models(path)
    return path


@pytest.fixture(scope="session")
def runner() -> GenerationRunner:
    device, dtype = pick_device()
    return GenerationRunner(ModelCache(), device=device, dtype=dtype)


@pytest.fixture
def storage(tmp_path: Path) -> StorageArgs:
    return StorageArgs(url=(tmp_path / "files").as_uri())


@pytest_asyncio.fixture(loop_scope="session")
async def runtime(
    database_url: str, models_dir: Path, storage: StorageArgs, runner: GenerationRunner
) -> AsyncIterator[QueueRuntime]:
    args = QueueArgs(
        database_url=database_url,
        models_dir=str(models_dir),
        default_model="demo-sd15",
        storage=storage,
        limits=TEST_LIMITS,
        poll_interval=0.2,
        migrate=False,  # the template database is already migrated
    )
    executor = InProcessExecutor(
        runner=runner, catalog=build_catalog(str(models_dir), "demo-sd15"), store=build_store(storage)
    )
    async with queue_runtime(args, executor) as runtime:
        yield runtime
    executor.close()


@pytest_asyncio.fixture(loop_scope="session")
async def client(runtime: QueueRuntime, storage: StorageArgs) -> AsyncIterator[httpx.AsyncClient]:
    store = build_store(storage)
    app = create_app(ApiContext(jobs=runtime.service, store=store, version="test"), max_body_bytes=64 * 1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve-app.test") as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def idle_client(repo, models_dir: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The same app and JobService with no dispatcher running: submitted jobs stay pending."""
    from serve_app.services.jobs import JobService

    store = build_store(StorageArgs(url=(tmp_path / "idle-files").as_uri()))
    service = JobService(
        repo=repo, catalog=build_catalog(str(models_dir), "demo-sd15"), store=store, limits=TEST_LIMITS
    )
    app = create_app(ApiContext(jobs=service, store=store, version="test"), max_body_bytes=64 * 1024)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve-app.test") as http:
        yield http
