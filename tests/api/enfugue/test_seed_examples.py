"""The curl examples of Enfugue's JSON API wiki page (shared/seeds/enfugue-json-api.txt), sent as curl sends them,
against the whole app over real HTTP: accounts on, real Postgres, the real queue and graph engine.

`curl -d '<json>'` labels its body `application/x-www-form-urlencoded`; Enfugue reads it as JSON all the same, so
every example here does exactly that. Where the wiki and Enfugue's code disagree, the code wins (noted inline).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from tests.api.conftest import TEST_LIMITS
from tests.support.live_server import ADMIN, LiveServer, live_server

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

ENFUGUE_JSON = "application/vnd.api+json"
CURL_HEADERS = {"User-Agent": "curl/8.5.0", "Accept": "*/*"}
USER_FIELDS = {"first_name", "id", "last_login", "last_name", "username"}
MODEL_FIELDS = {"model", "name", "negative_prompt", "prompt", "size"}
SETTINGS_FIELDS = {"safe", "auth", "max_queued_invocations", "max_queued_downloads", "max_concurrent_downloads",
                   "switch_mode", "cache_mode", "precision"}  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def server(runtime, pool, database_url, storage, models_dir) -> AsyncIterator[LiveServer]:
    async with live_server(runtime.service, pool=pool, database_url=database_url, storage=storage,
                           models_dir=models_dir, max_waiting_jobs=TEST_LIMITS.max_waiting_jobs) as live:  # fmt: skip
        yield live


@pytest_asyncio.fixture(loop_scope="session")
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=CURL_HEADERS, timeout=30) as client:
        yield client


async def curl(http: httpx.AsyncClient, method: str, path: str, data: Any = None, token: str | None = None,
               ) -> httpx.Response:  # fmt: skip
    """`curl [-X METHOD] [-d '<json>'] [-H "Authorization: Bearer <token>"] <url>`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is None:
        return await http.request(method, path, headers=headers)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return await http.request(method, path, content=json.dumps(data), headers=headers)


def enveloped(response: httpx.Response, params: dict[str, list[str]] | None = None, **meta: Any) -> Any:
    """The `data` of a success envelope, after checking `meta` is exactly `{"params": ..., **meta}`."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == ENFUGUE_JSON
    body = response.json()
    assert set(body) == {"meta", "data"}
    assert body["meta"] == {"params": params or {}, **meta}
    return body["data"]


async def login(http: httpx.AsyncClient) -> str:
    response = await curl(http, "POST", "/api/login", {"username": ADMIN[0], "password": ADMIN[1]})
    token = enveloped(response)
    assert token["type"] == "AuthenticationToken"
    attributes = token["attributes"]
    assert {"access_token", "created", "expires", "id", "token_type", "user_id"} <= set(attributes)
    assert attributes["token_type"] == "Bearer"
    assert len(attributes["access_token"]) >= 32
    assert attributes["expires"] > attributes["created"]  # both naive ISO-8601, so they sort as strings
    access_token: str = attributes["access_token"]
    return access_token


async def test_login_then_status_with_the_token(http):
    refused = await curl(http, "GET", "/api")
    assert refused.status_code == 401
    assert refused.json() == {"errors": [{"status": "401", "title": "AuthenticationError",
                                          "detail": "Invalid or no credentials supplied."}]}  # fmt: skip
    token = await login(http)
    status = enveloped(await curl(http, "GET", "/api", token=token))
    assert set(status) == {"status", "system", "gpu", "version", "uptime"}
    assert status["system"] == {"downloads": {"active": 0, "queued": 0, "total": 0},
                                "invocations": {"active": False, "queued": 0, "total": 0}}  # fmt: skip
    assert isinstance(status["uptime"], float) and status["uptime"] >= 0


async def test_users_crud(http):
    token = await login(http)
    [default] = enveloped(await curl(http, "GET", "/api/users", token=token), count=1)
    assert default["type"] == "User"
    assert set(default["attributes"]) >= USER_FIELDS
    assert (default["attributes"]["username"], default["attributes"]["first_name"]) == ("enfugue", "Default")
    assert default["attributes"]["last_login"] is not None  # we just logged in

    body = {"username": "myuser", "new_password": "mypassword", "repeat_password": "mypassword", "admin": True}
    created = enveloped(await curl(http, "POST", "/api/users", body, token=token))
    assert created["type"] == "User"
    assert {key: created["attributes"][key] for key in USER_FIELDS - {"id"}} == {
        "first_name": None, "last_login": None, "last_name": None, "username": "myuser"}  # fmt: skip
    assert created["attributes"]["admin"] is True

    # The wiki's example says `curl -X POST` under its PATCH heading; PATCH is the route (as in Enfugue's code).
    patched = enveloped(await curl(http, "PATCH", "/api/users/myuser", {"admin": False}, token=token))
    assert patched["attributes"]["username"] == "myuser"
    assert patched["attributes"]["admin"] is False
    # The new user can log in with the password set by the create call.
    response = await curl(http, "POST", "/api/login", {"username": "myuser", "password": "mypassword"})
    assert enveloped(response)["attributes"]["user_id"] == created["attributes"]["id"]

    assert enveloped(await curl(http, "DELETE", "/api/users/myuser", token=token)) is None
    listed = enveloped(await curl(http, "GET", "/api/users", token=token), count=1)
    assert [user["attributes"]["username"] for user in listed] == ["enfugue"]


async def test_models_crud_with_include(http):
    token = await login(http)
    assert enveloped(await curl(http, "GET", "/api/models", token=token), count=0) == []

    created = enveloped(await curl(http, "POST", "/api/models", {"name": "My Model", "checkpoint": "demo-sd15"},
                                   token=token))  # fmt: skip
    assert created == {"type": "DiffusionModel", "attributes": {
        "model": "demo-sd15", "name": "My Model", "negative_prompt": "", "prompt": "", "size": 512}}  # fmt: skip

    patched = enveloped(await curl(http, "PATCH", "/api/models/My%20Model", {"scheduler": "ddim"}, token=token))
    assert patched == created  # the scheduler is a relation, not an attribute

    full = {"name": "SDXL", "checkpoint": "demo-sdxl", "size": 1024, "refiner": "demo-sdxl", "refiner_size": 1024,
            "vae": "demo-vae-sd15", "guidance_scale": 5, "width": 1024, "height": 1024}  # fmt: skip
    enveloped(await curl(http, "POST", "/api/models", full, token=token))
    listed = enveloped(await curl(http, "GET", "/api/models", token=token), count=2)
    assert [model["type"] for model in listed] == ["DiffusionModel"] * 2
    assert all(set(model["attributes"]) == MODEL_FIELDS for model in listed)
    assert {model["attributes"]["name"] for model in listed} == {"My Model", "SDXL"}

    response = await curl(http, "GET", "/api/models/SDXL?include=vae&include=refiner&include=config", token=token)
    [model] = enveloped(response, params={"include": ["vae", "refiner", "config"]}, count=1)
    assert model["attributes"]["model"] == "demo-sdxl" and model["attributes"]["size"] == 1024
    assert model["include"]["vae"] == [
        {"type": "DiffusionModelVAE", "attributes": {"diffusion_model_name": "SDXL", "name": "demo-vae-sd15"}}
    ]
    assert model["include"]["refiner"] == [{"type": "DiffusionModelRefiner", "attributes": {
        "diffusion_model_name": "SDXL", "model": "demo-sdxl", "size": 1024}}]  # fmt: skip
    config = {item["attributes"]["configuration_key"]: item for item in model["include"]["config"]}
    assert set(config) == {"guidance_scale", "height", "width"}
    assert config["guidance_scale"] == {"type": "DiffusionModelDefaultConfiguration", "attributes": {
        "configuration_key": "guidance_scale", "configuration_value": 5, "diffusion_model_name": "SDXL"}}  # fmt: skip

    # Enfugue's DELETE handler has no format(): an empty body (enfugue-api.md §11.12; the wiki shows an envelope).
    deleted = await curl(http, "DELETE", "/api/models/My%20Model", token=token)
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert (await curl(http, "GET", "/api/models/My%20Model", token=token)).status_code == 404
    assert [model["attributes"]["name"] for model in enveloped(await curl(http, "GET", "/api/models", token=token),
                                                               count=1)] == ["SDXL"]  # fmt: skip


async def wait_finished(http: httpx.AsyncClient, uid: str, token: str) -> dict[str, Any]:
    """Poll `GET /api/invocation/{uuid}` as the wiki describes, until completed or error."""
    async with asyncio.timeout(150):
        while True:
            data: dict[str, Any] = enveloped(await curl(http, "GET", f"/api/invocation/{uid}", token=token))
            if data["status"] in ("completed", "error"):
                return data
            await asyncio.sleep(0.1)  # the client's polling interval, not synchronisation


async def test_invoke_poll_image_history_delete(http):
    token = await login(http)
    # The wiki sends only the prompt; its defaults (512×512, 40 steps) take minutes on a CPU, so smaller here.
    body = {"prompt": "Hello, world!", "width": 64, "height": 64, "num_inference_steps": 4}
    submitted = enveloped(await curl(http, "POST", "/api/invoke", body, token=token))
    uid = submitted["uuid"]
    assert len(uid) == 32 and submitted["status"] in ("queued", "processing")

    data = await wait_finished(http, uid, token)
    assert data["status"] == "completed", data
    assert {"id", "uuid", "status", "progress", "step", "duration", "total", "images", "rate"} <= set(data)
    assert data["uuid"] == uid and data["progress"] == 1
    assert data["step"] == data["total"] == 4
    assert data["images"] == [f"images/{uid}_0.png"]

    # `curl .../api/invocation/images/<uuid>_0.png > myfile.png; identify myfile.png` → PNG WxH 8-bit sRGB.
    image = await curl(http, "GET", f"/api/invocation/{data['images'][0]}")
    assert image.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(image.content))
    assert (png.format, png.size, png.mode) == ("PNG", (64, 64), "RGB")
    thumbnail = await curl(http, "GET", f"/api/invocation/thumbnails/{uid}_0.png")
    assert thumbnail.status_code == 200
    # Shared with InvokeAI's gallery: a WebP of at most 256 px a side (Enfugue: a PNG 200 px high).
    assert Image.open(io.BytesIO(thumbnail.content)).size == (64, 64)

    [entry] = enveloped(await curl(http, "GET", "/api/invocation-history?limit=1", token=token),
                        params={"limit": ["1"]}, count=1)  # fmt: skip
    assert entry["type"] == "DiffusionInvocation"
    attributes = entry["attributes"]
    assert set(attributes) == {"duration", "error", "id", "outputs", "plan", "started", "user_id"}
    assert (attributes["id"], attributes["outputs"], attributes["error"]) == (uid, 1, None)
    assert attributes["plan"]["prompt"] == "Hello, world!"

    assert enveloped(await curl(http, "DELETE", f"/api/invocation/{uid}", token=token)) is None
    assert (await curl(http, "GET", f"/api/invocation/{uid}", token=token)).status_code == 404
    assert (await curl(http, "GET", f"/api/invocation/images/{uid}_0.png")).status_code == 404
    assert enveloped(await curl(http, "GET", "/api/invocation-history", token=token), count=0) == []


async def test_model_listings(http):
    token = await login(http)
    assert enveloped(await curl(http, "GET", "/api/checkpoints", token=token)) == ["demo-sd15", "demo-sdxl"]
    assert enveloped(await curl(http, "GET", "/api/lora", token=token)) == ["demo-lora-sd15.safetensors"]
    assert enveloped(await curl(http, "GET", "/api/lycoris", token=token)) == []
    assert enveloped(await curl(http, "GET", "/api/inversions", token=token)) == []


async def test_settings_read_and_change(http):
    token = await login(http)
    settings = enveloped(await curl(http, "GET", "/api/settings", token=token))
    assert set(settings) >= SETTINGS_FIELDS
    assert settings["auth"] is True
    assert settings["max_queued_invocations"] == TEST_LIMITS.max_waiting_jobs
    assert (settings["max_queued_downloads"], settings["max_concurrent_downloads"]) == (10, 2)

    changed = enveloped(await curl(http, "POST", "/api/settings", {"cache_mode": None}, token=token))
    assert changed == {**settings, "cache_mode": None}
    assert enveloped(await curl(http, "GET", "/api/settings", token=token)) == changed


async def test_the_region_nodes_example_is_refused_clearly(http, server):
    """The wiki's `nodes` payload (a cat left, a dog right, backgrounds removed then filled): this server has no
    background-removal model, so it says so up front instead of failing the invocation later."""
    token = await login(http)
    example = {
        "width": 512,
        "height": 512,
        "prompt": "A cat and a dog sleeping peacefully on a rug",
        "nodes": [
            {"x": 0, "y": 0, "w": 256, "h": 512, "prompt": "A cat sleeping peacefully on a rug",
             "remove_background": True},
            {"x": 256, "y": 0, "w": 256, "h": 512, "prompt": "A dog sleeping peacefully on a rug",
             "remove_background": True},
        ],
    }  # fmt: skip
    response = await curl(http, "POST", "/api/invoke", example, token=token)
    assert response.status_code == 400
    assert response.json()["errors"] == [{"status": "400", "title": "BadRequestError",
                                          "detail": "No background-removal model is installed"}]  # fmt: skip
    assert enveloped(await curl(http, "GET", "/api/invocation", token=token)) == []
