"""A preset's default upscale (`upscale`, `outscale`, `upscale_iterative`, `upscale_diffusion*` in its default
configuration) applies when the request sets no upscale of its own, and the server's limits apply to it as to a
request's. Graph cases store jobs that never run and read their graphs back; one case runs the in-process stack."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from serve_app.serving.args import StorageArgs
from tests.api.enfugue.preset_support import running_client
from tests.api.enfugue.test_invoke_models import SMALL, graph_of, idle, submit
from tests.api.test_enfugue_flow import finished, wait_for
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

__all__ = ["idle"]  # the fixture, shared with test_invoke_models


async def _preset(client: httpx.AsyncClient, name: str, **config: Any) -> None:
    response = await client.post("/api/models", json={"name": name, "checkpoint": "demo-sd15", **config})
    assert response.status_code == 200, response.text


def _nodes_of_type(graph: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return sorted((node for node in graph["nodes"].values() if node["type"] == kind), key=lambda node: node["id"])


async def test_a_presets_upscale_applies_when_the_request_has_none(idle, repo) -> None:
    # A stored "2" reads as 2, as the request's own keys would.
    await _preset(idle, "Big", upscale="nearest", outscale="2")
    graph = await graph_of(repo, await submit(idle, model="Big"))
    [resize] = _nodes_of_type(graph, "img_resize")
    assert (resize["width"], resize["height"], resize["resample_mode"]) == (128, 128, "nearest")

    # The request's own upscale wins, whole (its method, its scale).
    own = await graph_of(repo, await submit(idle, model="Big", upscale="bicubic", outscale=4))
    [resize] = _nodes_of_type(own, "img_resize")
    assert (resize["width"], resize["resample_mode"]) == (256, "bicubic")

    # A preset without upscale keys adds nothing.
    await _preset(idle, "Plain", num_inference_steps=3)
    assert _nodes_of_type(await graph_of(repo, await submit(idle, model="Plain")), "img_resize") == []


async def test_iterative_and_diffusion_defaults_with_steps_capped_by_the_server(idle, repo) -> None:
    await _preset(idle, "Crisp", upscale=["lanczos", "nearest"], outscale=4, upscale_iterative=True,
                  upscale_diffusion=True, upscale_diffusion_steps=[100, 5], upscale_diffusion_strength=0.3)  # fmt: skip
    graph = await graph_of(repo, await submit(idle, model="Crisp"))
    resizes = _nodes_of_type(graph, "img_resize")
    assert [(node["width"], node["resample_mode"]) for node in resizes] == [(128, "lanczos"), (256, "nearest")]
    denoises = [graph["nodes"][f"upscale_denoise_0_{number}"] for number in (0, 1)]
    # 100 is over the test server's 50 steps: capped, as a request's own would be.
    assert [node["steps"] for node in denoises] == [50, 5]
    assert all(node["denoising_start"] == pytest.approx(0.7) for node in denoises)


@pytest.mark.parametrize(
    ("config", "detail"),
    [
        ({"upscale": "lanczos", "outscale": 16}, "upscaled size 1024×1024"),
        ({"upscale": "gfpgan", "outscale": 2}, "Model Odd has unusable defaults: No upscaling model installed"),
        ({"upscale": "sharpen", "outscale": 2}, "Model Odd has unusable defaults: Unknown upscale method"),
        ({"upscale": "lanczos", "outscale": "lots"}, "Model Odd has unusable defaults: outscale"),
    ],
)
async def test_an_unusable_preset_upscale_is_400_and_stores_nothing(idle, repo, config, detail) -> None:
    await _preset(idle, "Odd", **config)
    response = await idle.post("/api/invoke", json={**SMALL, "model": "Odd"})
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(repo)


@pytest_asyncio.fixture(loop_scope="session")
async def stack(runtime, pool, models_dir: Path, storage: StorageArgs) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(runtime, pool, models_dir, storage) as client:
        yield client


async def test_the_presets_upscale_is_in_the_result(stack) -> None:
    await _preset(stack, "Twice", upscale="nearest", outscale=2)
    uids = [await submit(stack, model="Twice"), await submit(stack, model="demo-sd15")]
    upscaled, plain = [await _pixels(stack, uid) for uid in uids]
    assert upscaled.shape == (128, 128, 3) and plain.shape == (64, 64, 3)
    # Nearest neighbour: the generated image in 2×2 blocks.
    assert np.array_equal(upscaled[::2, ::2], plain)


async def _pixels(client: httpx.AsyncClient, uid: str) -> np.ndarray:
    data = await wait_for(client, uid, finished)
    assert data["status"] == "completed", data
    response = await client.get(f"/api/invocation/{data['images'][0]}")
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)
