"""Enfugue's bundled Python client (`enfugue/client/client.py` + `invocation.py`, 0.2.x, on pibble's
JSONWebServiceAPIClient), request for request, against the whole app over real HTTP with accounts on.

`BundledClient` below sends exactly what that client sends: every request carries `Accept-Encoding: gzip` (and
requests' `User-Agent`/`Accept`), POST bodies are `json.dumps(data)` labelled `application/vnd.api+json`, an empty
`data` sends no body at all, paths are joined onto `<base>/api` (`self.get("")` is `/api` itself), `login()` sets
`Authorization: <token_type> <access_token>`, `download()` polls `GET /download` until the entry with its file
name is `complete`, and `RemoteInvocation.results()` polls `GET /invocation/{uuid}` while `queued`/`processing`
and then fetches `GET /invocation/{entry}` for each entry of `images`. Any status >= 400 raises, as
`raise_for_status` does.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from tests.api.conftest import TEST_LIMITS
from tests.support.http_files import FileServer
from tests.support.live_server import ADMIN, LiveServer, live_server

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

REQUESTS_HEADERS = {"User-Agent": "python-requests/2.31.0", "Accept": "*/*", "Connection": "keep-alive"}


class ClientError(Exception):
    """What pibble's raise_for_status raises (BadRequestError, AuthenticationError, ...), with the status."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code}: {response.text}")
        self.status = response.status_code
        self.body = response.json()


class BundledClient:
    """EnfugueClient's calls, in httpx; the polling intervals are the only liberty (the client sleeps 5 s)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.headers = {"Accept-Encoding": "gzip"}  # WebServiceAPIClientBase.__init__

    async def query(self, method: str, url: str, data: Any = None) -> httpx.Response:
        path = "/".join(part.strip("/") for part in ("/api", url) if part.strip("/"))  # pibble's url_join
        headers = dict(self.headers)
        content = None
        if method in ("POST", "PUT", "PATCH") and data:
            content = json.dumps(data)
            headers["Content-Type"] = "application/vnd.api+json"
        response = await self.http.request(method, f"/{path}", headers=headers, content=content)
        if response.status_code >= 400:
            raise ClientError(response)
        return response

    async def login(self, username: str, password: str) -> dict[str, Any]:
        response = (await self.query("POST", "login", {"username": username, "password": password})).json()["data"]
        attributes = response["attributes"]
        self.headers["Authorization"] = f"{attributes['token_type']} {attributes['access_token']}"
        return dict(response)

    async def data(self, url: str) -> Any:
        return (await self.query("GET", url)).json()["data"]

    async def download(self, kind: str, url: str, filename: str, overwrite: bool = False) -> dict[str, Any]:
        body = {"type": kind, "url": url, "filename": filename, "overwrite": overwrite}
        status: dict[str, Any] = (await self.query("POST", "/download", body)).json()["data"]
        while status["status"] != "complete":
            await asyncio.sleep(0.05)
            for download_status in await self.data("/download"):
                if download_status["filename"] == filename:
                    status = download_status
                    break
        return status

    async def invoke(self, **kwargs: Any) -> RemoteInvocation:
        response = (await self.query("POST", "/invoke", {k: v for k, v in kwargs.items() if v is not None})).json()
        data = response.get("data", {})
        return RemoteInvocation(self, data["uuid"], data["status"])


class RemoteInvocation:
    def __init__(self, client: BundledClient, uuid: str, status: str) -> None:
        self.client = client
        self.uuid = uuid
        self.status = status

    async def get_status(self) -> dict[str, Any]:
        return dict((await self.client.query("GET", f"/invocation/{self.uuid}")).json().get("data", {}))

    async def delete(self) -> None:
        await self.client.query("DELETE", f"/invocation/{self.uuid}")

    async def results(self) -> list[Image.Image]:
        status = await self.get_status()
        while status["status"] in ["queued", "processing"]:
            await asyncio.sleep(0.1)
            status = await self.get_status()
        if status["status"] == "error":
            raise RuntimeError(status.get("message", "The remote server did not include an error message."))
        assert isinstance(status["duration"], float)  # the client formats it with :.2f
        images: list[Image.Image] = []
        for image in status.get("images", []) or []:
            content = (await self.client.query("GET", f"/invocation/{image}")).content
            images.append(Image.open(io.BytesIO(content)))
        return images


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def server(files, runtime, pool, database_url, storage, models_dir, tmp_path) -> AsyncIterator[LiveServer]:
    # After `files`: the app's HTTP fetcher closes its keep-alive connections before the file server stops.
    # A copy of the demo models: the download test writes into the models folder.
    own_models = tmp_path / "models"
    shutil.copytree(models_dir, own_models)
    async with live_server(runtime.service, pool=pool, database_url=database_url, storage=storage,
                           models_dir=own_models, max_waiting_jobs=TEST_LIMITS.max_waiting_jobs) as live:  # fmt: skip
        yield live


@pytest_asyncio.fixture(loop_scope="session")
async def client(server: LiveServer) -> AsyncIterator[BundledClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=REQUESTS_HEADERS, timeout=30) as http:
        bundled = BundledClient(http)
        await bundled.login(*ADMIN)  # on_configure logs in when enfugue.username/password are configured
        yield bundled


async def test_login_sets_the_authorization_header(server):
    async with httpx.AsyncClient(base_url=server.url, headers=REQUESTS_HEADERS) as http:
        bundled = BundledClient(http)
        with pytest.raises(ClientError) as refused:
            await bundled.data("")
        assert refused.value.status == 401
        token = await bundled.login("ENFUGUE", ADMIN[1])  # usernames match case-insensitively, as pibble's
        assert bundled.headers["Authorization"] == f"Bearer {token['attributes']['access_token']}"
        status = await bundled.data("")  # `client.status()` is `GET` of the base path itself
        assert status["status"] in ("ready", "idle", "busy")
        with pytest.raises(ClientError) as wrong:
            await bundled.login("enfugue", "wrong")
        assert wrong.value.body["errors"][0]["title"] == "AuthenticationError"


async def test_listings_and_settings(client):
    assert await client.data("/checkpoints") == ["demo-sd15", "demo-sdxl"]
    assert await client.data("/lora") == ["demo-lora-sd15.safetensors"]
    assert await client.data("/lycoris") == []
    # The client asks `/inversion` (Enfugue serves only `/inversions`); this server answers both.
    assert await client.data("/inversion") == await client.data("/inversions") == []
    settings = await client.data("/settings")
    assert settings["max_queued_invocations"] == TEST_LIMITS.max_waiting_jobs
    assert settings["auth"] is True


async def test_invoke_results_delete(client):
    params = {"width": 64, "height": 64, "num_inference_steps": 3, "seed": 11, "samples": 2, "intermediates": False}
    invocation = await client.invoke(prompt="a lighthouse", model="demo-sd15", model_type="checkpoint", **params)
    assert len(invocation.uuid) == 32 and invocation.status in ("queued", "processing")
    images = await invocation.results()
    assert [(image.format, image.size) for image in images] == [("PNG", (64, 64))] * 2
    plan = json.loads(images[0].info["EnfugueGenerationData"])
    assert (plan["prompt"], plan["seed"]) == ("a lighthouse", 11)

    await invocation.delete()
    with pytest.raises(ClientError) as gone:
        await invocation.get_status()
    assert gone.value.status == 404
    assert gone.value.body["errors"][0]["title"] == "NotFoundError"


async def test_a_failed_invocation_raises_with_the_servers_message(client):
    # Unknown keys are ignored as Enfugue does; an unknown scheduler is refused up front (Enfugue fails it later).
    with pytest.raises(ClientError) as refused:
        await client.invoke(prompt="x", width=64, height=64, num_inference_steps=2, scheduler="warp-drive",
                            chunking_mask_type="bilinear")  # fmt: skip
    assert refused.value.status == 400
    assert refused.value.body["errors"][0]["detail"] == "Unknown scheduler warp-drive"


async def test_download_polls_until_complete(client, server, files):
    lora = Path(server.context.models.models_dir) / "loras" / "demo-lora-sd15.safetensors"
    url = files.add("/civitai/api/download/models/1234", lora.read_bytes())
    status = await client.download("lora", url, "fresh-lora.safetensors")
    assert (status["status"], status["filename"], status["source"]) == ("complete", "fresh-lora.safetensors", url)
    assert (status["downloaded"], status["total"]) == (lora.stat().st_size,) * 2
    assert (lora.parent / "fresh-lora.safetensors").read_bytes() == lora.read_bytes()
    assert len(files.requests("/civitai/api/download/models/1234")) == 1
    # A second download of an existing file without `overwrite` is Enfugue's 409.
    with pytest.raises(ClientError) as conflict:
        await client.download("lora", url, "fresh-lora.safetensors")
    assert conflict.value.status == 409
