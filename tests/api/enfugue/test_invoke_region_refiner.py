"""`POST /api/invoke` with canvas `nodes` and a `refiner` or `inpainter`: each region's diffusion (and the final
outpaint) gets the refiner pass with its own overrides, inpaint regions run on the inpainting model. The
in-process stack over a models folder with a tiny SDXL refiner and a tiny 9-channel SD 1.5 inpainting model;
regions are diffused independently, so what a setting must not touch is compared pixel for pixel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from serve_app.domain.models import model_keys_in
from serve_app.serving.args import StorageArgs
from tests.api.enfugue.preset_support import running_client
from tests.api.enfugue.test_invoke_refiner import (
    data_url,
    gradient,
    job_of,
    key_of,
    pixels,
    refiner_models,
    right_half_mask,
    submit,
)

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

XL = {"model": "demo-sdxl", "width": 64, "height": 64, "num_inference_steps": 4, "seed": 7}
SD1 = {**XL, "model": "demo-sd15"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own models folder (the shared one stays as other tests list it)."""
    return refiner_models(tmp_path_factory.mktemp("region-refiner-models"))


@pytest_asyncio.fixture(loop_scope="session")
async def stack(runtime: Any, pool: Any, models_dir: Path, storage: StorageArgs) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(runtime, pool, models_dir, storage) as client:
        yield client


def region(x: int, prompt: str, **overrides: Any) -> dict[str, Any]:
    return {"x": x, "y": 0, "w": 32, "h": 64, "prompt": prompt, **overrides}


async def run(client: httpx.AsyncClient, **params: Any) -> tuple[str, np.ndarray]:
    uid = await submit(client, **params)
    return uid, await pixels(client, uid)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(a - b).mean() > 1)


async def test_each_region_is_refined_with_its_own_refiner_strength(stack: httpx.AsyncClient, runtime: Any,
                                                                   pool: Any) -> None:  # fmt: skip
    nodes = [region(0, "a red barn"), region(32, "a blue sea")]
    _, plain = await run(stack, **XL, nodes=nodes)
    refined_uid, refined = await run(stack, **XL, nodes=nodes, refiner="tiny-refiner")
    assert differ(refined[:, :32], plain[:, :32]) and differ(refined[:, 32:], plain[:, 32:])

    # Strength 0 on the left region: it is exactly the image without a refiner; the right one is still refined.
    off_uid, left_off = await run(stack, **XL, nodes=[region(0, "a red barn", refiner_strength=0), nodes[1]],
                                  refiner="tiny-refiner")  # fmt: skip
    assert np.array_equal(left_off[:, :32], plain[:, :32])
    assert np.array_equal(left_off[:, 32:], refined[:, 32:])
    # A stronger refiner on the right region changes that region only.
    _, right_strong = await run(stack, **XL, nodes=[nodes[0], region(32, "a blue sea", refiner_strength=0.8)],
                                refiner="tiny-refiner")  # fmt: skip
    assert np.array_equal(right_strong[:, :32], refined[:, :32])
    assert differ(right_strong[:, 32:], refined[:, 32:])

    refiner_key = await key_of(pool, "tiny-refiner")
    graph = (await job_of(runtime, refined_uid)).request["graph"]
    assert refiner_key in model_keys_in(graph)
    assert {"refiner_region_0_0_denoise", "refiner_region_1_0_denoise"} <= set(graph["nodes"])
    off_nodes = (await job_of(runtime, off_uid)).request["graph"]["nodes"]
    assert "refiner_region_0_0_denoise" not in off_nodes and "refiner_region_1_0_denoise" in off_nodes


async def test_the_final_outpaint_is_refined(stack: httpx.AsyncClient) -> None:
    nodes = [region(0, "a red barn", refiner_strength=0)]
    _, plain = await run(stack, **XL, prompt="a harbour", nodes=nodes)
    _, refined = await run(stack, **XL, prompt="a harbour", nodes=nodes, refiner="tiny-refiner")
    assert np.array_equal(refined[:, :32], plain[:, :32])  # the region opted out; the outpaint keeps it exactly
    assert differ(refined[:, 40:], plain[:, 40:])


async def test_an_inpaint_region_runs_on_the_inpainter(stack: httpx.AsyncClient, runtime: Any, pool: Any) -> None:
    node = {"image": data_url(gradient()), "mask": data_url(right_half_mask()), "inpaint": True, "inpaint_feather": 0,
            "scale_to_model_size": False}  # fmt: skip
    plain_uid, plain = await run(stack, **SD1, prompt="a lighthouse", nodes=[node])
    uid, inpainted = await run(stack, **SD1, prompt="a lighthouse", nodes=[node], inpainter="tiny-inpaint")

    inpainter_key = await key_of(pool, "tiny-inpaint")
    graph = (await job_of(runtime, uid)).request["graph"]
    assert graph["nodes"]["inpainter"]["model"]["key"] == inpainter_key
    assert inpainter_key in model_keys_in(graph)
    assert inpainter_key not in model_keys_in((await job_of(runtime, plain_uid)).request["graph"])
    # The repainted half comes from another UNet; the kept half is the input, exactly, either way.
    source = np.asarray(gradient(), dtype=np.int16)
    assert differ(inpainted[:, 40:], plain[:, 40:])
    assert np.array_equal(inpainted[:, :32], source[:, :32]) and np.array_equal(plain[:, :32], source[:, :32])


async def test_a_refined_inpaint_region_keeps_its_unmasked_pixels(stack: httpx.AsyncClient) -> None:
    node = {"image": data_url(gradient()), "mask": data_url(right_half_mask()), "inpaint": True, "inpaint_feather": 0,
            "scale_to_model_size": False}  # fmt: skip
    _, plain = await run(stack, **XL, prompt="a lighthouse", nodes=[node])
    _, refined = await run(stack, **XL, prompt="a lighthouse", nodes=[node], refiner="tiny-refiner")
    source = np.asarray(gradient(), dtype=np.int16)
    assert differ(refined[:, 40:], plain[:, 40:])
    assert np.array_equal(refined[:, :32], source[:, :32])
