"""`POST /api/invoke` with `control_image` and `controlnet`: the tiny SD 1.5 ControlNet installed in the registry
under Enfugue's default repo, run through the in-process stack (production Queue wiring, dispatcher, executor)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from serve_app.domain.models import ModelFamily, ModelFormat, ModelRecord, ModelType
from serve_app.serving.args import StorageArgs
from serve_app.storage.model_registry import PgModelRegistry
from tests.api.enfugue.preset_support import idle_client, running_client
from tests.api.enfugue.test_invoke_images import data_url, gradient
from tests.api.test_enfugue_flow import fetch_png, finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored
from tests.support.tiny_models import controlnet_folder

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 3, "seed": 5,
         "model": "demo-sd15"}  # fmt: skip
CANNY_REPO = "lllyasviel/sd-controlnet-canny"
DEPTH_REPO = "lllyasviel/sd-controlnet-depth"


@pytest.fixture(scope="module")
def controlnet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return controlnet_folder(tmp_path_factory.mktemp("controlnet"))


async def install(pool, path: Path, repo: str) -> ModelRecord:
    """Register the tiny ControlNet as installed from `repo` (what an install from Hugging Face records)."""
    record = ModelRecord(key=str(uuid.uuid4()), hash=f"blake3:{repo}", path=str(path), file_size=1,
                         name=repo.rsplit("/", 1)[-1], base=ModelFamily.SD1, type=ModelType.CONTROLNET,
                         format=ModelFormat.DIFFUSERS, source=repo)  # fmt: skip
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


def square() -> Image.Image:
    array = np.full((64, 64, 3), 30, dtype=np.uint8)
    array[16:48, 16:48] = 220
    return Image.fromarray(array)


async def run(client: httpx.AsyncClient, **params: Any) -> tuple[str, np.ndarray]:
    response = await client.post("/api/invoke", json={**SMALL, **params})
    assert response.status_code == 200, response.text
    uid = response.json()["data"]["uuid"]
    data = await wait_for(client, uid, finished, timeout=150)
    assert data["status"] == "completed", data
    [entry] = data["images"]
    return uid, np.asarray((await fetch_png(client, entry)).convert("RGB"), dtype=np.int16)


async def graph_of(repo, uid: str) -> dict[str, Any]:
    job = await repo.get(uuid.UUID(uid))
    graph: dict[str, Any] = job.request["graph"]
    return graph


async def test_canny_control_guides_the_image_and_scale_zero_changes_nothing(stack, runtime, pool, controlnet_path):
    record = await install(pool, controlnet_path, CANNY_REPO)
    control = {"control_image": data_url(square()), "controlnet": "canny"}
    _, plain = await run(stack)
    uid, controlled = await run(stack, **control)
    _, unscaled = await run(stack, **control, conditioning_scale=0)
    assert np.abs(controlled - plain).mean() > 1
    assert np.abs(unscaled - plain).max() <= 1

    nodes = (await graph_of(runtime.repo, uid))["nodes"]
    assert nodes["control_controlnet"]["control_model"]["key"] == record.key
    assert nodes["control_canny"]["type"] == "canny_edge_detection"
    stored = nodes["control_canny"]["image"]["image_name"]
    assert stored.endswith("_control.png") and "control_image" not in nodes["metadata"]["enfugue"]
    assert nodes["metadata"]["enfugue"]["control"]["image"] == stored


async def test_controlled_image_to_image_differs_from_plain_image_to_image(stack, pool, controlnet_path):
    await install(pool, controlnet_path, CANNY_REPO)
    _, img2img = await run(stack, image=data_url(gradient()), strength=0.8)
    _, controlled = await run(stack, image=data_url(gradient()), strength=0.8, control_image=data_url(square()),
                              controlnet="canny")  # fmt: skip
    assert np.abs(controlled - img2img).mean() > 0.5


async def test_an_unprocessed_depth_image_is_used_as_sent_or_inverted(stack, runtime, pool, controlnet_path):
    await install(pool, controlnet_path, DEPTH_REPO)
    control = {"control_image": data_url(gradient()), "controlnet": "depth", "process_control_image": False}
    uid, as_sent = await run(stack, **control)
    inverted_uid, inverted = await run(stack, **control, invert_control_image=True)
    nodes = (await graph_of(runtime.repo, uid))["nodes"]
    assert "image" in nodes["control_controlnet"] and not any(n["type"] == "img_lerp" for n in nodes.values())
    inverted_nodes = (await graph_of(runtime.repo, inverted_uid))["nodes"]
    assert inverted_nodes["control_invert"]["type"] == "img_lerp"
    assert np.abs(as_sent - inverted).mean() > 0.5


async def test_without_an_installed_controlnet_the_invoke_is_400_and_nothing_is_stored(idle, repo, tmp_path):
    response = await idle.post("/api/invoke", json={**SMALL, "control_image": data_url(square()),
                                                    "controlnet": "canny"})  # fmt: skip
    assert_enfugue_error(response, 400, "BadRequestError",
                         f"No ControlNet model for `canny` is installed (install {CANNY_REPO})")  # fmt: skip
    await assert_nothing_stored(repo)
    assert not list((tmp_path / "idle-files").rglob("*.png"))


async def test_an_sdxl_model_needs_an_sdxl_controlnet(idle, repo, pool, controlnet_path):
    await install(pool, controlnet_path, CANNY_REPO)  # an SD 1.5 ControlNet only
    response = await idle.post("/api/invoke", json={**SMALL, "model": "demo-sdxl", "control_image": data_url(square()),
                                                    "controlnet": "canny"})  # fmt: skip
    assert_enfugue_error(response, 400, "BadRequestError", "(install diffusers/controlnet-canny-sdxl-1.0)")
    response = await idle.post("/api/invoke", json={**SMALL, "model": "demo-sdxl", "control_image": data_url(square()),
                                                    "controlnet": "pose", "process_control_image": False})  # fmt: skip
    assert_enfugue_error(response, 400, "BadRequestError", "There is no SDXL ControlNet for `pose`")
    await assert_nothing_stored(repo)


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"controlnet": "depth"}, "cannot run the `depth` detector"),
        ({"controlnet": "sketchy"}, "Unknown controlnet 'sketchy'"),
        ({"controlnet": 3}, "Unknown controlnet 3"),
        ({}, "`control_image` needs a `controlnet`"),
        ({"controlnet": "canny", "control_image": "data:image/png;base64,aGVsbG8="}, "is not a readable image"),
        ({"controlnet": "canny", "control_image": "/tmp/edges.png"}, "`control_image` must be a base64 data URL"),
        ({"controlnet": "canny", "conditioning_scale": 5}, "`conditioning_scale` must be between -1 and 2"),
        ({"controlnet": "canny", "process_control_image": "sometimes"}, "process_control_image"),
    ],
)
async def test_bad_control_parameters_are_400_with_nothing_stored(idle, repo, tmp_path, pool, controlnet_path,
                                                                  params, detail):  # fmt: skip
    await install(pool, controlnet_path, CANNY_REPO)
    response = await idle.post("/api/invoke", json={**SMALL, "control_image": data_url(square()), **params})
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(repo)
    assert not list((tmp_path / "idle-files").rglob("*.png"))


async def test_the_control_image_is_deleted_with_its_invocation(stack, pool, storage, controlnet_path):
    await install(pool, controlnet_path, CANNY_REPO)
    uid, _ = await run(stack, control_image=data_url(square()), controlnet="canny")
    root = Path(storage.url.removeprefix("file://"))
    assert list(root.rglob("*_control.png"))
    assert (await stack.delete(f"/api/invocation/{uid}")).status_code == 200
    assert not list(root.rglob("*_control.png"))


async def test_without_a_canvas_size_the_control_image_sets_it(idle, repo, pool, controlnet_path):
    await install(pool, controlnet_path, CANNY_REPO)
    body = {**SMALL, "width": None, "height": None, "control_image": data_url(square().resize((44, 40))),
            "controlnet": "canny"}  # fmt: skip
    response = await idle.post("/api/invoke", json=body)
    assert response.status_code == 200, response.text
    nodes = (await graph_of(repo, response.json()["data"]["uuid"]))["nodes"]
    assert (nodes["noise_0"]["width"], nodes["noise_0"]["height"]) == (48, 40)  # rounded up to multiples of 8


TILE_REPO = "lllyasviel/control_v11f1e_sd15_tile"
UPSCALE = {"upscale": "lanczos", "outscale": 2, "upscale_diffusion": True, "upscale_diffusion_steps": 3,
           "upscale_diffusion_strength": 0.5}  # fmt: skip


async def test_upscale_rediffusion_is_guided_by_the_upscaled_image(stack, runtime, pool, controlnet_path, tmp_path):
    canny = await install(pool, controlnet_path, CANNY_REPO)
    tile = await install(pool, controlnet_folder(tmp_path, name="tiny-tile", seed=3), TILE_REPO)
    _, plain = await run(stack, **UPSCALE)
    uid, guided = await run(stack, **UPSCALE, upscale_diffusion_controlnet="canny")
    tile_uid, tiled = await run(stack, **UPSCALE, upscale_diffusion_controlnet=["tile"])
    assert plain.shape == guided.shape == tiled.shape == (128, 128, 3)
    assert np.abs(guided - plain).mean() > 0.5 and np.abs(tiled - plain).mean() > 0.5

    nodes, edges = (graph := await graph_of(runtime.repo, uid))["nodes"], graph["edges"]
    control = nodes["upscale_control_0_0_controlnet"]
    assert control["control_model"]["key"] == canny.key and control["image"] is None  # it comes by edge
    wired = {(e["source"]["node_id"], e["destination"]["node_id"], e["destination"]["field"]) for e in edges}
    # The upscaled sample → canny → controlnet → the pass's denoise.
    assert {("upscale_0_0", "upscale_control_0_0_canny", "image"),
            ("upscale_control_0_0_canny", "upscale_control_0_0_controlnet", "image"),
            ("upscale_control_0_0_controlnet", "upscale_denoise_0_0", "control")} <= wired  # fmt: skip
    tile_nodes = (await graph_of(runtime.repo, tile_uid))["nodes"]
    assert tile_nodes["upscale_control_0_0_controlnet"]["control_model"]["key"] == tile.key
    assert not any(node["type"] == "canny_edge_detection" for node in tile_nodes.values())


@pytest.mark.parametrize(
    ("controlnet", "message"),
    [
        ("depth", "needs its detector"),
        ("warp", "Unknown controlnet 'warp'"),
        ("canny", f"No ControlNet model for `canny` is installed (install {CANNY_REPO})"),
    ],
)
async def test_upscale_controlnets_that_cannot_run_are_400_with_nothing_stored(idle, repo, controlnet, message):
    response = await idle.post("/api/invoke", json={**SMALL, **UPSCALE, "upscale_diffusion_controlnet": controlnet})
    assert_enfugue_error(response, 400, "BadRequestError", message)
    await assert_nothing_stored(repo)


async def test_an_upscale_controlnet_enfugue_ignores_runs_without_one(idle, repo):
    # Enfugue logs an error for names it does not handle in upscaling (pose, pidi, inpaint) and goes on.
    response = await idle.post("/api/invoke", json={**SMALL, **UPSCALE, "upscale_diffusion_controlnet": "pose"})
    assert response.status_code == 200, response.text
    nodes = (await graph_of(repo, response.json()["data"]["uuid"]))["nodes"]
    assert not any(node["type"] == "controlnet" for node in nodes.values())
