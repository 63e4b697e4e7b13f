"""`POST /api/invoke` with Enfugue's upscale keys, through the in-process stack and the tiny 64px models."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.api.enfugue.test_invoke_images import data_url, gradient
from tests.api.test_enfugue_flow import fetch_png, finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 3, "seed": 5}


async def run(client, **params: Any) -> list[np.ndarray]:
    response = await client.post("/api/invoke", json={**SMALL, **params})
    assert response.status_code == 200, response.text
    data = await wait_for(client, response.json()["data"]["uuid"], finished, timeout=150)
    assert data["status"] == "completed", data
    images = [await fetch_png(client, entry) for entry in data["images"]]
    return [np.asarray(image.convert("RGB"), dtype=np.int16) for image in images]


async def test_outscale_resizes_each_sample_with_the_method(client):
    [plain] = await run(client)
    [lanczos] = await run(client, upscale="lanczos", outscale=2)
    [nearest] = await run(client, upscale=["nearest"], outscale=2)
    assert lanczos.shape == nearest.shape == (128, 128, 3)
    # Nearest neighbour copies each pixel into a 2×2 block: the generated image, exactly.
    assert np.array_equal(nearest[::2, ::2], plain)
    assert np.array_equal(nearest[1::2, 1::2], plain)
    assert np.abs(lanczos - nearest).mean() > 0.5


async def test_iterative_upscale_runs_passes_of_two(client):
    [once] = await run(client, upscale="bicubic", outscale=4)
    [iterative] = await run(client, upscale="bicubic", outscale=4, upscale_iterative=True)
    assert once.shape == iterative.shape == (256, 256, 3)
    # Two bicubic 2× passes overshoot edges twice: not the same pixels as one 4× pass.
    assert not np.array_equal(once, iterative)


async def test_upscale_diffusion_rediffuses_the_resized_image(client):
    [resized] = await run(client, upscale="lanczos", outscale=2)
    [rediffused] = await run(client, upscale="lanczos", outscale=2, upscale_diffusion=True,
                             upscale_diffusion_steps=4, upscale_diffusion_strength=0.5)  # fmt: skip
    assert rediffused.shape == (128, 128, 3)
    assert np.abs(rediffused - resized).mean() > 1


async def test_upscale_diffusion_steps_default_is_capped_by_the_server(client):
    # Enfugue's default of 100 steps is over the test server's 50: capped, not refused.
    [image] = await run(client, upscale="nearest", outscale=2, upscale_diffusion=True,
                        upscale_diffusion_strength=0.05)  # fmt: skip
    assert image.shape == (128, 128, 3)


async def test_an_unchanged_input_is_upscaled(client):
    source = gradient()
    [result] = await run(client, image=data_url(source), strength=0, upscale="nearest", outscale=2)
    assert np.array_equal(result[::2, ::2], np.asarray(source, dtype=np.int16))


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"upscale": "esrgan", "outscale": 2}, "No upscaling model installed for esrgan"),
        ({"upscale": ["lanczos", "gfpgan"], "outscale": 4}, "No upscaling model installed for gfpgan"),
        ({"upscale": "sharpen", "outscale": 2}, "Unknown upscale method 'sharpen'"),
        ({"upscale": "lanczos", "outscale": 16}, "upscaled size 1024×1024"),
        ({"upscale": "lanczos", "outscale": 0}, "outscale"),
        (
            {"upscale": "lanczos", "outscale": 2, "upscale_diffusion": True, "upscale_diffusion_strength": 2},
            "upscale_diffusion_strength",
        ),
        ({"remove_background": True}, "No background-removal model is installed"),
    ],
)
async def test_upscales_this_server_cannot_run_are_400_with_nothing_stored(idle_client, repo, tmp_path, params,
                                                                           detail):  # fmt: skip
    response = await idle_client.post("/api/invoke", json={**SMALL, "image": data_url(gradient()), **params})
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(repo)
    assert not list((tmp_path / "idle-files").rglob("*.png"))


async def test_only_the_upscaled_samples_are_results_each_with_its_seed(client):
    response = await client.post("/api/invoke", json={**SMALL, "samples": 2, "upscale": "nearest", "outscale": 2})
    data = await wait_for(client, response.json()["data"]["uuid"], finished, timeout=150)
    assert data["status"] == "completed", data
    images = [await fetch_png(client, entry) for entry in data["images"]]
    assert [image.size for image in images] == [(128, 128), (128, 128)]  # not the 64px decodes before the upscale
    seeds = sorted(json.loads(image.info["EnfugueGenerationData"])["seed"] for image in images)
    assert seeds == [5, 6]
