"""`POST /api/invoke` with `refiner` and `inpainter`: the in-process stack over a models folder that also holds a
tiny SDXL refiner and a tiny 9-channel SD 1.5 inpainting model; pixels, graphs and job snapshots compared."""

from __future__ import annotations

import base64
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

from serve_app.domain.models import model_keys_in
from serve_app.inference.tiny import ensure_demo_models
from serve_app.serving.args import StorageArgs
from serve_app.storage.model_registry import PgModelRegistry
from tests.api.enfugue.preset_support import running_client
from tests.api.test_enfugue_flow import finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored
from tests.support import tiny_models

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

XL = {"model": "demo-sdxl", "prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 4, "seed": 7}
SD1 = {**XL, "model": "demo-sd15"}


def refiner_models(path: Path) -> Path:
    """A models folder with the demo models, a tiny SDXL refiner and a tiny SD1 inpainting model."""
    ensure_demo_models(path)
    tiny_models.sdxl_refiner_folder(path, name="tiny-refiner")
    tiny_models.sd1_inpaint_folder(path, name="tiny-inpaint")
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own models folder (the shared one stays as other tests list it)."""
    return refiner_models(tmp_path_factory.mktemp("refiner-models"))


@pytest_asyncio.fixture(loop_scope="session")
async def stack(runtime: Any, pool: Any, models_dir: Path, storage: StorageArgs) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(runtime, pool, models_dir, storage) as client:
        yield client


async def submit(client: httpx.AsyncClient, **params: Any) -> str:
    response = await client.post("/api/invoke", json=params)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["uuid"])


async def pixels(client: httpx.AsyncClient, uid: str) -> np.ndarray:
    data = await wait_for(client, uid, finished)
    assert data["status"] == "completed", data
    response = await client.get(f"/api/invocation/{data['images'][0]}")
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)


async def job_of(runtime: Any, uid: str) -> Any:
    return await runtime.repo.get(uuid.UUID(uid))


async def key_of(pool: Any, name: str) -> str:
    [record] = await PgModelRegistry(pool).find(name=name)
    return record.key


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def gradient() -> Image.Image:
    x = np.linspace(0, 255, 64, dtype=np.uint8)[None, :].repeat(64, 0)
    return Image.fromarray(np.stack([x, x.T, np.full_like(x, 90)], axis=-1), "RGB")


def right_half_mask() -> Image.Image:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 32:] = 255  # Enfugue's convention: white = repaint
    return Image.fromarray(mask, "L")


async def test_a_refiner_finishes_the_image_and_strength_zero_runs_none(stack: httpx.AsyncClient, runtime: Any,
                                                                       pool: Any) -> None:  # fmt: skip
    refined = await submit(stack, **XL, refiner="tiny-refiner")
    plain = await submit(stack, **XL)
    again = await submit(stack, **XL, refiner="tiny-refiner")
    zero = await submit(stack, **XL, refiner="tiny-refiner", refiner_strength=0)
    stronger = await submit(stack, **XL, refiner="tiny-refiner", refiner_strength=0.8)

    images = {uid: await pixels(stack, uid) for uid in (refined, plain, again, zero, stronger)}
    assert np.abs(images[refined] - images[plain]).mean() > 1
    assert np.array_equal(images[refined], images[again])
    assert np.array_equal(images[zero], images[plain])
    assert np.abs(images[stronger] - images[refined]).mean() > 0
    refiner_key = await key_of(pool, "tiny-refiner")
    job = await job_of(runtime, refined)
    nodes = job.request["graph"]["nodes"]
    assert nodes["refiner"]["model"]["key"] == refiner_key
    assert (nodes["denoise_0"]["denoising_end"], nodes["refiner_denoise_0"]["denoising_start"]) == (0.7, 0.7)
    # The job's model snapshot (what the replica may load) is made of the graph's model keys.
    assert refiner_key in model_keys_in(job.request["graph"])
    assert refiner_key not in model_keys_in((await job_of(runtime, zero)).request["graph"])


async def test_a_presets_refiner_is_used_and_the_requests_ignored(stack: httpx.AsyncClient, runtime: Any,
                                                                 pool: Any) -> None:  # fmt: skip
    body = {"name": "Refined XL", "checkpoint": "demo-sdxl", "size": 64, "refiner": "tiny-refiner",
            "refiner_denoising_strength": 0.5, "refiner_aesthetic_score": 8}  # fmt: skip
    assert (await stack.post("/api/models", json=body)).status_code == 200, body

    with_preset = await submit(stack, **{**XL, "model": "Refined XL"}, refiner="demo-sdxl")
    direct = await submit(stack, **XL, refiner="tiny-refiner", refiner_strength=0.5, refiner_aesthetic_score=8)

    nodes = (await job_of(runtime, with_preset)).request["graph"]["nodes"]
    assert nodes["refiner"]["model"]["key"] == await key_of(pool, "tiny-refiner")
    assert nodes["refiner_positive"]["aesthetic_score"] == 8
    assert np.array_equal(await pixels(stack, with_preset), await pixels(stack, direct))


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({**XL, "refiner": "no-such-refiner"}, "Cannot find or access no-such-refiner"),
        ({**XL, "refiner": "demo-sd15"}, "must be an SDXL refiner or SDXL model"),
        ({**SD1, "refiner": "tiny-refiner"}, "cannot be used with demo-sd15"),
        ({**SD1, "inpainter": "no-such-inpainter"}, "Cannot find or access no-such-inpainter"),
        ({**XL, "inpainter": "tiny-inpaint"}, "cannot be used with demo-sdxl"),
        ({**XL, "refiner": "tiny-refiner", "refiner_strength": 2}, "refiner_strength"),
    ],
)
async def test_unusable_refiners_and_inpainters_are_400(stack: httpx.AsyncClient, runtime: Any,
                                                       params: dict[str, Any], detail: str) -> None:  # fmt: skip
    response = await stack.post("/api/invoke", json=params)
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(runtime.repo)


async def test_an_inpaint_with_an_inpainter_runs_on_its_nine_channel_unet(stack: httpx.AsyncClient, runtime: Any,
                                                                         pool: Any) -> None:  # fmt: skip
    # A hard mask edge (no feather), so the kept half is exactly the input's.
    inpaint = {**SD1, "image": data_url(gradient()), "mask": data_url(right_half_mask()), "inpaint_feather": 0,
               "scale_to_model_size": False}  # fmt: skip
    with_inpainter = await submit(stack, **inpaint, inpainter="tiny-inpaint")
    plain = await submit(stack, **inpaint)
    # Without a mask there is nothing to inpaint: the inpainter is resolved but not used.
    img2img = await submit(stack, **{**inpaint, "mask": None}, strength=0.5, inpainter="tiny-inpaint")

    inpainter_key = await key_of(pool, "tiny-inpaint")
    job = await job_of(runtime, with_inpainter)
    assert job.request["graph"]["nodes"]["inpainter"]["model"]["key"] == inpainter_key
    assert inpainter_key in model_keys_in(job.request["graph"])
    assert inpainter_key not in model_keys_in((await job_of(runtime, img2img)).request["graph"])
    inpainted, original = await pixels(stack, with_inpainter), await pixels(stack, plain)
    # The repainted (right) half comes from another UNet; the kept half is the input either way.
    assert np.abs(inpainted[:, 40:] - original[:, 40:]).mean() > 1
    assert np.array_equal(inpainted[:, :24], original[:, :24])
    await pixels(stack, img2img)
