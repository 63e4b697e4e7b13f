"""`POST /api/invoke` with models: presets, checkpoints, LoRAs, VAEs and inversions resolved against the registry.

The generation cases run the in-process stack (`runtime`: the production Queue wiring, dispatcher and executor
with the tiny demo models) and compare pixels; the request-handling cases store jobs that never run.
"""

from __future__ import annotations

import io
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
from tests.api.test_enfugue_flow import finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 2, "seed": 99}
LORA = "demo-lora-sd15.safetensors"


@pytest_asyncio.fixture(loop_scope="session")
async def stack(runtime, pool, models_dir: Path, storage: StorageArgs) -> AsyncIterator[httpx.AsyncClient]:
    """The in-process stack with presets, its registry holding the demo models."""
    async with running_client(runtime, pool, models_dir, storage) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def idle(pool, repo, models_dir: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The same wiring with no dispatcher: jobs stay pending, their graphs can be read back."""
    async with idle_client(pool, repo, models_dir, tmp_path / "files") as client:
        yield client


async def submit(client: httpx.AsyncClient, **params: Any) -> str:
    response = await client.post("/api/invoke", json={**SMALL, **params})
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["uuid"])


async def pixels(client: httpx.AsyncClient, uid: str) -> np.ndarray:
    data = await wait_for(client, uid, finished)
    assert data["status"] == "completed", data
    response = await client.get(f"/api/invocation/{data['images'][0]}")
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)


async def graph_of(repo, uid: str) -> dict[str, Any]:
    job = await repo.get(uuid.UUID(uid))
    graph: dict[str, Any] = job.request["graph"]
    return graph


async def registered(pool, name: str) -> ModelRecord:
    [record] = await PgModelRegistry(pool).find(name=name)
    return record


async def test_a_presets_lora_is_in_the_graph_and_changes_the_pixels(stack, runtime, pool):
    lora = await registered(pool, "demo-lora-sd15")
    response = await stack.post("/api/models", json={"name": "Glossy", "checkpoint": "demo-sd15",
                                                     "lora": [{"model": LORA, "weight": 1}]})  # fmt: skip
    assert response.status_code == 200, response.text

    with_preset = await submit(stack, model="Glossy")
    plain = await submit(stack, model="demo-sd15")
    direct = await submit(stack, model="demo-sd15", lora={"model": "demo-lora-sd15", "weight": 1.0})
    weightless = await submit(stack, model="demo-sd15", lora=[{"model": LORA, "weight": 0}])

    node = (await graph_of(runtime.repo, with_preset))["nodes"]["lora_0"]
    assert node["type"] == "lora_loader"
    assert node["lora"] == {"key": lora.key, "hash": lora.hash, "name": "demo-lora-sd15", "base": "sd-1",
                            "type": "lora", "submodel_type": None}  # fmt: skip
    assert node["weight"] == 1.0
    assert "lora_0" not in (await graph_of(runtime.repo, plain))["nodes"]

    images = {uid: await pixels(stack, uid) for uid in (with_preset, plain, direct, weightless)}
    assert np.abs(images[with_preset] - images[plain]).max() > 0  # the LoRA changes pixels
    assert np.array_equal(images[with_preset], images[direct])  # the preset applies it as a request would
    assert np.array_equal(images[weightless], images[plain])  # at weight 0 it changes nothing


async def test_a_vae_override_decodes_through_vae_loader(stack, runtime, pool):
    vae = await registered(pool, "demo-vae-sd15")
    overridden = await submit(stack, model="demo-sd15", vae="demo-vae-sd15")
    plain = await submit(stack, model="demo-sd15")
    graph = await graph_of(runtime.repo, overridden)
    assert graph["nodes"]["vae"]["type"] == "vae_loader"
    assert graph["nodes"]["vae"]["vae_model"]["key"] == vae.key
    assert {"node_id": "vae", "field": "vae"} in [edge["source"] for edge in graph["edges"]]
    assert np.abs(await pixels(stack, overridden) - await pixels(stack, plain)).max() > 0


async def test_preset_values_hold_or_yield_as_enfugue_decides(idle, repo):
    body = {"name": "Tuned", "checkpoint": "demo-sd15", "size": 128, "prompt": "oil painting", "scheduler": "ddim",
            "lora": [{"model": LORA, "weight": 0.25}], "num_inference_steps": 7, "guidance_scale": 3.5,
            "height": 96}  # fmt: skip
    assert (await idle.post("/api/models", json=body)).status_code == 200
    uid = await submit(idle, model="Tuned", width=None, height=None, num_inference_steps=None, lora="ignored.pt",
                       size=512, scheduler="eds", prompt="a boat")  # fmt: skip
    graph = await graph_of(repo, uid)
    nodes = graph["nodes"]
    assert nodes["lora_0"]["weight"] == 0.25  # the preset's LoRA, not the request's
    assert (nodes["noise_0"]["width"], nodes["noise_0"]["height"]) == (128, 96)  # preset size; config height
    assert (nodes["denoise_0"]["steps"], nodes["denoise_0"]["cfg_scale"]) == (7, 3.5)  # config defaults
    assert nodes["denoise_0"]["scheduler"] == "euler"  # the request's scheduler (eds) wins
    assert nodes["positive"]["prompt"] == "a boat, oil painting"
    enfugue = nodes["metadata"]["enfugue"]
    assert (enfugue["model"], enfugue["model_type"]) == ("demo-sd15", "checkpoint")
    # Request values win over the default configuration.
    uid = await submit(idle, model="Tuned", num_inference_steps=3, guidance_scale=9)
    nodes = (await graph_of(repo, uid))["nodes"]
    assert (nodes["denoise_0"]["steps"], nodes["denoise_0"]["cfg_scale"]) == (3, 9)


async def test_inversions_are_written_into_the_prompt(idle, repo, pool):
    embedding = ModelRecord(
        key="emb-easyneg", hash="blake3:e", path="/elsewhere/embeddings/easyneg.pt", file_size=1, name="easyneg",
        base=ModelFamily.SD1, type=ModelType.EMBEDDING, format=ModelFormat.EMBEDDING_FILE, source="/x/easyneg.pt",
    )  # fmt: skip
    await PgModelRegistry(pool).add(embedding)
    uid = await submit(idle, model="demo-sd15", inversion="easyneg.pt", negative_prompt="EasyNeg, blurry")
    nodes = (await graph_of(repo, uid))["nodes"]
    assert nodes["negative"]["prompt"] == "<easyneg>, blurry"
    assert nodes["metadata"]["embeddings"][0]["key"] == "emb-easyneg"
    uid = await submit(idle, model="demo-sd15", inversion=[{"model": "easyneg"}], prompt="a cat")
    assert (await graph_of(repo, uid))["nodes"]["positive"]["prompt"] == "a cat, <easyneg>"
    response = await idle.post("/api/invoke", json={**SMALL, "model": "demo-sdxl", "inversion": "easyneg"})
    assert_enfugue_error(response, 400, "BadRequestError", "Inversion easyneg is a sd-1 model and cannot be used")


async def test_checkpoints_resolve_by_name_file_name_or_stem(idle, repo, pool):
    lora = await registered(pool, "demo-lora-sd15")
    uid = await submit(idle, model="demo-sdxl", model_type="checkpoint")
    assert (await graph_of(repo, uid))["nodes"]["model"]["type"] == "sdxl_model_loader"
    uid = await submit(idle, model="demo-sd15", lora="demo-lora-sd15")
    assert (await graph_of(repo, uid))["nodes"]["lora_0"]["lora"]["key"] == lora.key


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"model": "nope.safetensors"}, 400, "Cannot find or access nope.safetensors"),
        ({"model": "demo-sd15", "model_type": "checkpoint", "lora": "nope.safetensors"}, 400,
         "Cannot find or access nope.safetensors"),
        ({"model": "No Such Preset"}, 404, "Unknown diffusion model No Such Preset"),
        ({"lora": {"weight": 0.5}}, 400, "Bad model format - missing required dictionary key `model`"),
        ({"lora": [{"model": ""}]}, 400, "Bad model format - missing required dictionary key `model`"),
        ({"lycoris": 5}, 400, "Bad format for lycoris - must be a string, a dictionary with the key `model`"),
        ({"lora": [[LORA]]}, 400, "Bad format for lora"),
        ({"lora": {"model": LORA, "weight": "much"}}, 400, "Bad format for lora - `weight` must be a number"),
        ({"inversion": {"weight": 1}}, 400, "Bad model format - missing required dictionary key `model`"),
        ({"inversion": [None]}, 400, "Bad format for inversion"),
        ({"vae": "mse"}, 400, "Cannot find or access VAE mse (stabilityai/sd-vae-ft-mse)"),
        ({"vae": 3}, 400, "vae"),
        ({"model": "demo-sdxl", "lora": LORA}, 400, "cannot be used with demo-sdxl"),
        ({"refiner": "sd_xl_refiner_1.0.safetensors"}, 400, "Cannot find or access sd_xl_refiner_1.0.safetensors"),
    ],
)  # fmt: skip
async def test_bad_model_parameters_are_refused_and_nothing_is_stored(idle, repo, params, status, detail):
    response = await idle.post("/api/invoke", json={**SMALL, **params})
    title = {400: "BadRequestError", 404: "NotFoundError", 501: "NotImplementedError"}[status]
    assert_enfugue_error(response, status, title, detail)
    await assert_nothing_stored(repo)


async def test_a_preset_whose_checkpoint_is_missing_is_400(idle, repo):
    await idle.post("/api/models", json={"name": "Stale", "checkpoint": "v1-5-pruned.ckpt"})
    response = await idle.post("/api/invoke", json={**SMALL, "model": "Stale"})
    assert_enfugue_error(response, 400, "BadRequestError", "Cannot find or access v1-5-pruned.ckpt")
    await assert_nothing_stored(repo)
