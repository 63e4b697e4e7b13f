"""`POST /api/invoke` with a canvas wider than `size`: sliding-window diffusion on the tiny 64px model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.api.test_enfugue_flow import fetch_png, finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

# The demo model is an SD1 checkpoint (native size 512) of 64px UNet samples: `size` 64 is its window.
WIDE = {"prompt": "a long beach", "size": 64, "width": 128, "height": 64, "num_inference_steps": 3, "seed": 7}


async def run(client: Any, **params: Any) -> tuple[np.ndarray, dict[str, Any]]:
    response = await client.post("/api/invoke", json={**WIDE, **params})
    assert response.status_code == 200, response.text
    data = await wait_for(client, response.json()["data"]["uuid"], finished, timeout=150)
    assert data["status"] == "completed", data
    [entry] = data["images"]
    image = await fetch_png(client, entry)
    return np.asarray(image.convert("RGB"), dtype=np.int16), json.loads(image.info["EnfugueGenerationData"])


async def test_a_canvas_wider_than_the_size_is_diffused_in_windows(client: Any) -> None:
    chunked, plan = await run(client)
    coarse, _ = await run(client, chunking_size=32, chunking_blur=16)
    whole, _ = await run(client, chunking_size=0)
    # The window as large as the canvas: nothing to chunk, the same single pass as chunking off.
    unchunked, _ = await run(client, size=128)
    assert chunked.shape == coarse.shape == whole.shape == (64, 128, 3)
    assert np.array_equal(whole, unchunked)
    assert np.abs(chunked - whole).mean() > 1
    assert np.abs(coarse - chunked).mean() > 0.5  # another stride, other windows
    assert (plan["chunking_size"], plan["chunking_blur"]) == (None, None)  # Enfugue's defaults (size // 8)


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"chunking_size": -8}, "chunking_size"),
        ({"chunking_blur": -1}, "chunking_blur"),
        ({"chunking_size": "wide"}, "chunking_size"),
        ({"chunking_blur": 1.5}, "chunking_blur"),
    ],
)
async def test_bad_chunking_values_are_400_with_nothing_stored(
    idle_client: Any, repo: Any, params: dict[str, Any], detail: str
) -> None:
    response = await idle_client.post("/api/invoke", json={**WIDE, **params})
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(repo)
