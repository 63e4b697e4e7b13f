"""Enfugue's `/api/download` and `/api/download/cancel` through the ASGI app, from a real HTTP server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from serve_app.api.app import create_app
from serve_app.domain.generation import Limits
from serve_app.services.jobs import JobService
from serve_app.storage.job_repository import PgJobRepository
from serve_app.storage.model_catalog import DirectoryModelCatalog
from tests.support.http_files import FileServer
from tests.support.install_stack import InstallStack, install_stack

pytestmark = pytest.mark.timeout(60)

DATA = os.urandom(40_000)
STATUS_FIELDS = ["id", "status", "source", "destination", "filename", "elapsed", "downloaded", "total"]


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as files:
        yield files


@pytest_asyncio.fixture(loop_scope="session")
async def stack(pool, server, tmp_path) -> AsyncIterator[InstallStack]:
    async with install_stack(pool, server, tmp_path) as services:
        yield services


@pytest_asyncio.fixture(loop_scope="session")
async def http(stack: InstallStack) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(stack.context()))
    async with httpx.AsyncClient(transport=transport, base_url="http://serve-app.test") as client:
        yield client


async def data_of(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/vnd.api+json"
    return response.json()["data"]


async def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    return error


@pytest.mark.parametrize(
    ("kind", "folder"), [("lora", "loras"), ("checkpoint", ""), ("inversion", "embeddings"), ("lycoris", "lycoris")]
)
async def test_download_goes_to_the_folder_of_its_type(http, stack, server, kind, folder) -> None:
    url = server.add("/civitai/123", DATA)
    started = await data_of(
        await http.post("/api/download", json={"type": kind, "url": url, "filename": "m.safetensors"})
    )
    target = stack.models_dir / folder / "m.safetensors"
    assert list(started) == STATUS_FIELDS
    assert started["status"] in ("queued", "downloading")
    assert (started["source"], started["destination"], started["filename"]) == (url, str(target), "m.safetensors")

    await stack.downloads.wait(int(started["id"], 16))
    (listed,) = await data_of(await http.get("/api/download"))
    assert (listed["id"], listed["status"]) == (started["id"], "complete")
    assert (listed["downloaded"], listed["total"]) == (len(DATA), len(DATA))
    assert listed["elapsed"] >= 0
    assert target.read_bytes() == DATA


async def test_missing_fields_and_unknown_types(http, stack) -> None:
    for body, missing in (({}, "type"), ({"type": "lora"}, "url"), ({"type": "lora", "url": "http://h/x"}, "filename")):
        error = await error_of(await http.post("/api/download", json=body), 400)
        assert error == {
            "status": "400",
            "title": "BadRequestError",
            "detail": f"Missing required argument '{missing}'",
        }
    error = await error_of(
        await http.post("/api/download", json={"type": "hypernetwork", "url": "http://h/x", "filename": "x"}), 400
    )
    assert error["detail"].startswith("Unknown download type hypernetwork")
    bad_url = {"type": "lora", "url": "file:///etc/passwd", "filename": "x"}
    assert (await error_of(await http.post("/api/download", json=bad_url), 400))["title"] == "BadRequestError"
    assert await data_of(await http.get("/api/download")) == []


async def test_existing_files_conflict_unless_overwritten(http, stack, server) -> None:
    url = server.add("/f/m.safetensors", DATA)
    (stack.models_dir / "loras").mkdir()
    (stack.models_dir / "loras" / "m.safetensors").write_bytes(b"old")
    body = {"type": "lora", "url": url, "filename": "m.safetensors"}
    error = await error_of(await http.post("/api/download", json=body), 409)
    assert error == {"status": "409", "title": "StateConflictError", "detail": "File exists: m.safetensors"}
    started = await data_of(await http.post("/api/download", json={**body, "overwrite": True}))
    await stack.downloads.wait(int(started["id"], 16))
    assert (stack.models_dir / "loras" / "m.safetensors").read_bytes() == DATA


async def _server_downloads(stack: InstallStack, pool: Any) -> dict[str, int]:
    """`GET /api`'s download counts, from an app whose Enfugue status route has a job service too."""
    jobs = JobService(
        repo=PgJobRepository(pool),
        catalog=DirectoryModelCatalog(stack.models_dir, ""),
        store=stack.store,
        limits=Limits(),
    )
    transport = httpx.ASGITransport(app=create_app(stack.context(jobs=jobs)))
    async with httpx.AsyncClient(transport=transport, base_url="http://serve-app.test") as client:
        counts: dict[str, int] = (await data_of(await client.get("/api")))["system"]["downloads"]
    return counts


async def test_one_download_per_url_and_cancel(http, stack, server, pool) -> None:
    url = server.add("/f/big.safetensors", DATA, send_length=False)  # Enfugue would refuse this; we accept it
    gate = server.hold("/f/big.safetensors", after=500)
    body = {"type": "checkpoint", "url": url, "filename": "big.safetensors"}
    try:
        started = await data_of(await http.post("/api/download", json=body))
        error = await error_of(await http.post("/api/download", json=body), 400)
        assert error["detail"] == f"Already downloading {url}"
        # The server status counts it (waiting or already running: the worker decides when).
        assert (await _server_downloads(stack, pool))["total"] == 1
        cancelled = await data_of(await http.post("/api/download/cancel", json={"url": url}))
        assert (cancelled["id"], cancelled["status"]) == (started["id"], "canceled")
        assert await _server_downloads(stack, pool) == {"active": 0, "queued": 0, "total": 0}
    finally:
        gate.set()
    await stack.downloads.wait(int(started["id"], 16))
    error = await error_of(await http.post("/api/download/cancel", json={"url": url}), 400)
    assert error["detail"] == f"Not downloading {url}"
    assert (await error_of(await http.post("/api/download/cancel", json={}), 400))["detail"] == (
        "Missing required argument 'url'"
    )
    assert not (stack.models_dir / "big.safetensors").exists()

    gate.clear()
    finished = await data_of(await http.post("/api/download", json=body))
    gate.set()
    await stack.downloads.wait(int(finished["id"], 16))
    statuses = {item["id"]: item for item in await data_of(await http.get("/api/download"))}
    assert statuses[finished["id"]]["status"] == "complete"
    assert statuses[finished["id"]]["total"] == len(DATA)  # unknown until the end, then what arrived
    assert statuses[started["id"]]["status"] == "canceled"
