"""`POST /api/invoke` with upscale re-diffusion larger than `size`: the pass runs in windows through the in-process
stack (queue, dispatcher, graph engine) on the tiny 64px model."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from serve_app.services.enfugue_chunking import TILED_NODE
from tests.api.test_enfugue_flow import fetch_png, finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

# `size` 64 is the tiny model's window: the 64px sample fits it, its 2× upscale does not.
UPSCALE = {"prompt": "a lighthouse", "size": 64, "width": 64, "height": 64, "num_inference_steps": 3, "seed": 5,
           "upscale": "lanczos", "outscale": 2, "upscale_diffusion": True, "upscale_diffusion_steps": 4,
           "upscale_diffusion_strength": 0.5}  # fmt: skip


async def test_an_upscale_pass_larger_than_the_size_rediffuses_in_windows(client: Any, runtime: Any) -> None:
    response = await client.post("/api/invoke", json={**UPSCALE, "upscale_diffusion_chunking_size": 32})
    assert response.status_code == 200, response.text
    uid = response.json()["data"]["uuid"]
    data = await wait_for(client, uid, finished, timeout=150)
    assert data["status"] == "completed", data
    [entry] = data["images"]
    image = np.asarray((await fetch_png(client, entry)).convert("RGB"), dtype=np.int16)
    assert image.shape == (128, 128, 3)
    assert image.std() > 1  # a picture, not a blank

    nodes = (await runtime.repo.get(uuid.UUID(uid))).request["graph"]["nodes"]
    denoise = nodes["upscale_denoise_0_0"]
    # Stride 32 in 64px windows: tiles overlapping by 32px.
    assert (denoise["type"], denoise["tile_width"], denoise["tile_overlap"]) == (TILED_NODE, 64, 32)
    assert nodes["denoise_0"]["type"] == "denoise_latents"
    assert nodes["metadata"]["enfugue"]["upscale"][0]["chunking_size"] == 32


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"upscale_diffusion_chunking_size": -8}, "upscale_diffusion_chunking_size"),
        ({"upscale_diffusion_chunking_blur": [16, -1]}, "upscale_diffusion_chunking_blur"),
        ({"upscale_diffusion_chunking_size": "wide"}, "upscale_diffusion_chunking_size"),
        ({"upscale_diffusion_scale_chunking_size": "sometimes"}, "upscale_diffusion_scale_chunking_size"),
    ],
)
async def test_bad_upscale_chunking_values_are_400_with_nothing_stored(
    idle_client: Any, repo: Any, params: dict[str, Any], detail: str
) -> None:
    response = await idle_client.post("/api/invoke", json={**UPSCALE, **params})
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(repo)
