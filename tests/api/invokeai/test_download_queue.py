"""`/api/v1/download_queue` through the ASGI app, downloading from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio

from serve_app.api.app import create_app
from tests.support.golden import golden_body
from tests.support.http_files import FileServer
from tests.support.install_stack import InstallStack, install_stack

pytestmark = pytest.mark.timeout(60)

QUEUE = "/api/v1/download_queue"
DATA = os.urandom(50_000)
FIELDS = [
    "id", "dest", "download_path", "status", "bytes", "total_bytes", "error_type", "error", "source", "access_token",
    "priority", "job_started", "job_ended", "content_type",
]  # fmt: skip


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


async def test_download_into_the_models_folder(http, stack, server) -> None:
    assert (await http.get(f"{QUEUE}/")).json() == golden_body("87-download_queue-list.json")
    url = server.add("/f/weights.safetensors", DATA, content_type="application/octet-stream")
    dest = str(stack.models_dir / "loras")
    response = await http.post(f"{QUEUE}/i/", json={"source": url, "dest": dest, "priority": 3, "access_token": "t"})
    assert response.status_code == 200, response.text
    job = response.json()
    assert list(job) == FIELDS
    assert (job["status"], job["source"], job["dest"], job["priority"], job["access_token"]) == (
        "waiting", url, dest, 3, None,
    )  # fmt: skip

    await stack.downloads.wait(job["id"])
    done = (await http.get(f"{QUEUE}/i/{job['id']}")).json()
    assert done["status"] == "completed"
    assert done["download_path"] == f"{dest}/weights.safetensors"
    assert (done["bytes"], done["total_bytes"], done["content_type"]) == (
        len(DATA),
        len(DATA),
        "application/octet-stream",
    )
    assert (stack.models_dir / "loras" / "weights.safetensors").read_bytes() == DATA
    assert [seen.authorization for seen in server.requests("/f/weights.safetensors")] == ["Bearer t"]
    assert (await http.get(f"{QUEUE}/")).json() == [done]

    pruned = await http.patch(f"{QUEUE}/")
    assert (pruned.status_code, pruned.content) == (204, b"")
    assert (await http.get(f"{QUEUE}/")).json() == []


async def test_refusals(http, stack, server, tmp_path) -> None:
    url = server.add("/f/x.bin", DATA)
    outside = await http.post(f"{QUEUE}/i/", json={"source": url, "dest": str(tmp_path / "elsewhere")})
    assert outside.status_code == 403 and "detail" in outside.json()
    escape = await http.post(f"{QUEUE}/i/", json={"source": url, "dest": str(stack.models_dir / ".." / "x")})
    assert escape.status_code == 403
    assert (
        await http.post(f"{QUEUE}/i/", json={"source": "ftp://h/x", "dest": str(stack.models_dir)})
    ).status_code == 400
    assert (await http.post(f"{QUEUE}/i/", json={"source": url})).status_code == 422
    assert (await http.get(f"{QUEUE}/")).json() == []
    for method in ("GET", "DELETE"):
        missing = await http.request(method, f"{QUEUE}/i/777")
        assert (missing.status_code, missing.json()) == (404, {"detail": "Unrecognized job"})


async def test_cancel_one_and_all(http, stack, server) -> None:
    gates = [server.hold(f"/slow/{index}.bin", after=100) for index in range(3)]
    for index in range(3):
        server.add(f"/slow/{index}.bin", DATA)
    try:
        ids = []
        for index in range(3):
            body = {"source": server.url(f"/slow/{index}.bin"), "dest": str(stack.models_dir)}
            ids.append((await http.post(f"{QUEUE}/i/", json=body)).json()["id"])
        one = await http.delete(f"{QUEUE}/i/{ids[0]}")
        assert (one.status_code, one.content) == (204, b"")
        assert (await http.get(f"{QUEUE}/i/{ids[0]}")).json()["status"] == "cancelled"
        every = await http.delete(f"{QUEUE}/i")
        assert every.status_code == 204
    finally:
        for gate in gates:
            gate.set()
    for job_id in ids:
        assert (await stack.downloads.wait(job_id)).status == "cancelled"
    assert [path.name for path in stack.models_dir.iterdir()] == []


async def test_dest_may_name_the_file_or_be_relative_to_the_models_folder(http, stack, server) -> None:
    url = server.add("/f/anything", DATA)
    as_file = await http.post(f"{QUEUE}/i/", json={"source": url, "dest": str(stack.models_dir / "vae" / "my.bin")})
    relative = await http.post(f"{QUEUE}/i/", json={"source": url, "dest": "loras"})
    for response in (as_file, relative):
        assert response.status_code == 200, response.text
        await stack.downloads.wait(response.json()["id"])
    assert (stack.models_dir / "vae" / "my.bin").read_bytes() == DATA
    assert (stack.models_dir / "loras" / "anything").read_bytes() == DATA
    assert relative.json()["dest"] == str(stack.models_dir.resolve() / "loras")
