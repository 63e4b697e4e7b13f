"""The images and boards routes on a real Postgres and a file object store, through the ASGI app.

Only the gallery collaborators are wired (no queue, no executor): `gallery` is an httpx client,
`gallery_services` the same ImageService/BoardService/recorder the app uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest_asyncio

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.domain.ports import BusMessage
from serve_app.services.boards import BoardService
from serve_app.services.images import ImageService, UploadLimits
from serve_app.storage.image_repository import PgImageRepository
from serve_app.storage.objects import FileObjectStore

# Small enough to test the limits with small files.
GALLERY_LIMITS = UploadLimits(max_bytes=512 * 1024, max_pixels=1024 * 1024, max_resize_pixels=4096 * 4096)


class RecordingBus:
    """The EventBus port in memory: keeps every message and lets a test wait for one."""

    def __init__(self) -> None:
        self.messages: list[BusMessage] = []
        self._changed = asyncio.Condition()

    async def publish(self, message: BusMessage) -> None:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    async def wait_for(self, event: str, timeout: float = 10.0, **data: Any) -> BusMessage:
        """The first message of `event` whose data includes `data`, waiting up to `timeout` seconds."""

        def found() -> BusMessage | None:
            for message in self.messages:
                if message.event == event and all(message.data.get(key) == value for key, value in data.items()):
                    return message
            return None

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        message = found()
        assert message is not None
        return message


@dataclass
class GalleryServices:
    images: ImageService
    boards: BoardService
    bus: RecordingBus
    store: FileObjectStore
    repo: PgImageRepository

    def has_object(self, key: str) -> bool:
        return (self.store.root / key).is_file()


@pytest_asyncio.fixture(loop_scope="session")
async def gallery_services(pool: Any, tmp_path: Path) -> AsyncIterator[GalleryServices]:
    store = FileObjectStore(tmp_path / "objects")
    repo = PgImageRepository(pool)
    bus = RecordingBus()
    images = ImageService(repo=repo, store=store, bus=bus, limits=GALLERY_LIMITS)
    boards = BoardService(boards=repo, images=repo, store=store)
    yield GalleryServices(images=images, boards=boards, bus=bus, store=store, repo=repo)
    await images.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def gallery(gallery_services: GalleryServices) -> AsyncIterator[httpx.AsyncClient]:
    context = ApiContext(
        jobs=cast(Any, None),
        store=gallery_services.store,
        version="test",
        images=gallery_services.images,
        boards=gallery_services.boards,
    )
    app = create_app(context, max_body_bytes=4 * 1024 * 1024)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve-app.test") as client:
        yield client


# -- the whole InvokeAI stack in this process --------------------------------------------------------


@dataclass
class InvokeAIStack:
    """The app as one Ingress replica serves it (uvicorn, lifespan, Socket.IO hub), over the same Queue
    runtime (dispatcher + in-process executor on the demo models) a Queue replica runs."""

    http: httpx.AsyncClient
    url: str
    context: ApiContext
    models: dict[str, dict[str, Any]]

    async def wait_item(self, item_id: int, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll `GET i/{item_id}` (as InvokeAI's scripted clients do) until the item reaches one of `statuses`."""
        wanted = statuses or ("completed", "failed", "canceled")
        async with asyncio.timeout(timeout):
            while True:
                response = await self.http.get(f"/api/v1/queue/default/i/{item_id}")
                response.raise_for_status()
                item: dict[str, Any] = response.json()
                if item["status"] in wanted:
                    return item
                await asyncio.sleep(0.05)  # polling is the client behaviour under test, not synchronisation


@pytest_asyncio.fixture(loop_scope="session")
async def invokeai(runtime: Any, storage: Any, database_url: str, models_dir: Path) -> AsyncIterator[InvokeAIStack]:
    import socket

    import uvicorn

    from serve_app.serving.args import IngressArgs
    from serve_app.serving.wiring import ingress_runtime

    args = IngressArgs(
        storage=storage,
        database_url=database_url,
        models_dir=str(models_dir),
        default_model="demo-sd15",
        max_queue_size=50,
    )
    async with ingress_runtime(args, runtime.service) as context:
        app = create_app(context)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, lifespan="on", log_level="warning", ws="websockets-sansio", timeout_graceful_shutdown=2
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            listed = (await http.get("/api/v2/models/")).json()["models"]
            models = {
                model["name"]: {key: model[key] for key in ("key", "hash", "name", "base", "type")} for model in listed
            }
            yield InvokeAIStack(http=http, url=url, context=context, models=models)
        server.should_exit = True
        await asyncio.wait_for(task, 10)
