"""`POST /api/invoke` with `upscale: esrgan | esrganime`: tiny Real-ESRGAN-layout models in the registry, run by
`spandrel_image_to_image_autoscale` through the in-process stack; and the InvokeAI install of such a file."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from serve_app.api.app import create_app
from serve_app.domain.models import ModelFamily, ModelFormat, ModelRecord, ModelType
from serve_app.serving.args import StorageArgs
from serve_app.storage.model_registry import PgModelRegistry
from tests.api.enfugue.preset_support import idle_client, running_client
from tests.api.test_enfugue_flow import fetch_png, finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored
from tests.support.http_files import FileServer
from tests.support.install_stack import install_stack
from tests.support.tiny_models import esrgan

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 3, "seed": 5,
         "model": "demo-sd15"}  # fmt: skip


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("upscalers")
    return {
        "x4": esrgan(folder, name="RealESRGAN_x4plus", scale=4),
        "x2": esrgan(folder, name="RealESRGAN_x2plus", scale=2, suffix=".pth", seed=1),
        "anime": esrgan(folder, name="RealESRGAN_x4plus_anime_6B", scale=4, seed=2),
    }


async def install(pool: Any, path: Path) -> ModelRecord:
    """Register a tiny upscaler as an install of the file records it."""
    record = ModelRecord(key=str(uuid.uuid4()), hash=f"blake3:{path.name}", path=str(path), file_size=1,
                         name=path.stem, base=ModelFamily.ANY, type=ModelType.SPANDREL,
                         format=ModelFormat.CHECKPOINT, source=str(path))  # fmt: skip
    await PgModelRegistry(pool).add(record)
    return record


@pytest_asyncio.fixture(loop_scope="session")
async def stack(runtime, pool, models_dir: Path, storage: StorageArgs) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(runtime, pool, models_dir, storage) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def idle(pool, repo, models_dir: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The registry-backed JobService with no dispatcher: jobs stay pending, their graphs can be read back."""
    async with idle_client(pool, repo, models_dir, tmp_path / "idle-files") as client:
        yield client


async def run(client: httpx.AsyncClient, **params: Any) -> np.ndarray:
    response = await client.post("/api/invoke", json={**SMALL, **params})
    assert response.status_code == 200, response.text
    data = await wait_for(client, response.json()["data"]["uuid"], finished, timeout=150)
    assert data["status"] == "completed", data
    [entry] = data["images"]
    return np.asarray((await fetch_png(client, entry)).convert("RGB"), dtype=np.int16)


async def pending_graph(client: httpx.AsyncClient, repo: Any, **params: Any) -> dict[str, Any]:
    response = await client.post("/api/invoke", json={**SMALL, **params})
    assert response.status_code == 200, response.text
    job = await repo.get(uuid.UUID(response.json()["data"]["uuid"]))
    graph: dict[str, Any] = job.request["graph"]
    return graph


async def test_esrgan_with_outscale_2_gives_a_2x_image_made_by_the_model(stack, pool, upscalers):
    await install(pool, upscalers["x4"])
    [plain, lanczos] = [await run(stack), await run(stack, upscale="lanczos", outscale=2)]
    upscaled = await run(stack, upscale="esrgan", outscale=2)

    assert plain.shape == (64, 64, 3)
    assert upscaled.shape == lanczos.shape == (128, 128, 3)
    # The tiny model's random weights paint their own picture: nothing like a plain resize of the sample.
    assert np.abs(upscaled - lanczos).mean() > 5
    assert upscaled.std() > 10


async def test_esrganime_picks_the_anime_model_and_esrgan_the_other(idle, repo, pool, upscalers):
    general = await install(pool, upscalers["x4"])
    anime = await install(pool, upscalers["anime"])
    await install(pool, upscalers["x2"])
    graph = await pending_graph(idle, repo, samples=1, upscale=["esrgan", "esrganime"], outscale=4,
                                upscale_iterative=True)  # fmt: skip
    nodes = graph["nodes"]

    first, second = nodes["upscale_0_0"], nodes["output_0"]
    assert first["type"] == second["type"] == "spandrel_image_to_image_autoscale"
    # Real-ESRGAN ×4 is preferred over the ×2 for esrgan; the anime model runs esrganime.
    assert first["image_to_image_model"]["key"] == general.key
    assert second["image_to_image_model"]["key"] == anime.key
    # Each pass scales its own input: 64 → 128 → 256.
    assert (first["scale"], second["scale"]) == (2.0, 2.0)
    assert first["is_intermediate"] and not second["is_intermediate"]


async def test_without_a_matching_model_the_invoke_is_400_naming_what_to_install(idle, repo, pool, upscalers):
    response = await idle.post("/api/invoke", json={**SMALL, "upscale": "esrgan", "outscale": 2})
    assert_enfugue_error(response, 400, "BadRequestError", "No upscaling model installed for esrgan: install")
    assert "RealESRGAN_x4plus" in response.json()["errors"][0]["detail"]

    await install(pool, upscalers["x4"])  # not an anime model
    response = await idle.post("/api/invoke", json={**SMALL, "upscale": "esrganime", "outscale": 2})
    assert_enfugue_error(response, 400, "BadRequestError", "No upscaling model installed for esrganime")
    response = await idle.post("/api/invoke", json={**SMALL, "upscale": "gfpgan", "outscale": 2})
    assert_enfugue_error(response, 400, "BadRequestError", "this server does not run GFPGAN")
    await assert_nothing_stored(repo)


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as files:
        yield files


async def test_an_invokeai_install_of_the_tiny_file_is_a_spandrel_model(pool, server, tmp_path, upscalers):
    async with install_stack(pool, server, tmp_path) as services:
        source = services.imports / "RealESRGAN_x4plus.safetensors"
        source.write_bytes(upscalers["x4"].read_bytes())
        transport = httpx.ASGITransport(app=create_app(services.context()))
        async with httpx.AsyncClient(transport=transport, base_url="http://serve-app.test") as http:
            posted = await http.post("/api/v2/models/install", params={"source": str(source), "inplace": "true"},
                                     json={})  # fmt: skip
            assert posted.status_code == 201, posted.text
            await services.installs.wait(posted.json()["id"])
            done = (await http.get(f"/api/v2/models/install/{posted.json()['id']}")).json()

    assert done["status"] == "completed", done
    config = done["config_out"]
    assert (config["type"], config["format"], config["base"]) == ("spandrel_image_to_image", "checkpoint", "any")
    assert config["name"] == "RealESRGAN_x4plus"
