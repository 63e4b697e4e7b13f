"""Enfugue's `upscale_diffusion_*chunking*` keys: upscale re-diffusion passes larger than the window as the tiled
MultiDiffusion node, with Enfugue's per-pass stride."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest, UpscalePass
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.services.enfugue_chunking import TILED_NODE, upscale_stride
from serve_app.services.enfugue_upscale import UpscaleKeys, UpscaleSettings
from serve_app.services.generation_graphs import generation_graph

MAIN = ModelSpec(name="demo", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path="/models/demo")


def request(**values: Any) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "p", "width": 64, "height": 64, "steps": 3, "seed": 7, **values})


def passes(**values: Any) -> list[UpscalePass]:
    return UpscaleSettings(**{"upscale": "lanczos", "outscale": 2, "diffusion": True, **values}).passes()


def layout(graph: dict[str, Any], node_id: str) -> tuple[str, int | None, int | None]:
    node = graph["nodes"][node_id]
    return node["type"], node.get("tile_width"), node.get("tile_overlap")


@pytest.mark.parametrize(
    ("fields", "number", "size", "stride"),
    [
        ({}, 0, 64, 16),  # Enfugue's default: size // 4 ...
        ({}, 1, 64, 32),  # ... times the pass number + 1 ...
        ({}, 2, 64, 32),  # ... capped at size // 2
        ({}, 1, 512, 256),
        ({"scale_chunking_size": False}, 2, 64, 16),  # not scaled: the same every pass
        ({"chunking_size": 40, "scale_chunking_size": False}, 1, 64, 40),  # and not capped
        ({"chunking_size": 8}, 2, 64, 24),
        ({"chunking_size": 0}, 3, 64, 0),  # off stays off
    ],
)
def test_the_stride_grows_per_pass_as_enfugue_scales_it(
    fields: dict[str, Any], number: int, size: int, stride: int
) -> None:
    step = UpscalePass(scale=2, method="lanczos", steps=4, **fields)
    assert upscale_stride(step, number, size) == stride


def test_a_pass_larger_than_the_window_is_the_tiled_node() -> None:
    graph = generation_graph(request(size=64, upscale=passes()), MAIN)
    # The 64px sample fits the window; its 2× re-diffusion (128px) slides 64px windows by 16px.
    assert layout(graph, "denoise_0") == ("denoise_latents", None, None)
    assert layout(graph, "upscale_denoise_0_0") == (TILED_NODE, 64, 48)
    node = graph["nodes"]["upscale_denoise_0_0"]
    assert (node["tile_height"], node["steps"], node["denoising_start"]) == (64, 100, 0.8)
    fields = {edge["destination"]["field"] for edge in graph["edges"]
              if edge["destination"]["node_id"] == "upscale_denoise_0_0"}  # fmt: skip
    assert fields == {"unet", "positive_conditioning", "negative_conditioning", "noise", "latents"}


def test_zero_or_a_window_as_large_as_the_image_diffuses_it_whole() -> None:
    off = generation_graph(request(size=64, upscale=passes(chunking_size=0)), MAIN)
    assert layout(off, "upscale_denoise_0_0") == ("denoise_latents", None, None)
    fits = generation_graph(request(size=128, upscale=passes()), MAIN)
    assert layout(fits, "upscale_denoise_0_0") == ("denoise_latents", None, None)
    # The sample's own chunking does not turn the passes off, nor on.
    sample_off = generation_graph(request(size=64, chunking_size=0, upscale=passes()), MAIN)
    assert layout(sample_off, "upscale_denoise_0_0")[0] == TILED_NODE


def test_the_model_size_is_the_window_when_the_request_names_none() -> None:
    graph = generation_graph(request(width=512, height=512, upscale=passes()), MAIN)
    assert layout(graph, "upscale_denoise_0_0") == (TILED_NODE, 512, 384)  # stride 512 // 4


def test_scaled_chunking_grows_per_pass() -> None:
    iterative = {"outscale": 4, "iterative": True}
    scaled = generation_graph(request(size=64, upscale=passes(**iterative)), MAIN)
    assert layout(scaled, "upscale_denoise_0_0") == (TILED_NODE, 64, 48)  # stride 16
    assert layout(scaled, "upscale_denoise_0_1") == (TILED_NODE, 64, 32)  # stride 32
    fixed = generation_graph(request(size=64, upscale=passes(**iterative, scale_chunking_size=False)), MAIN)
    assert layout(fixed, "upscale_denoise_0_1") == (TILED_NODE, 64, 48)
    listed = generation_graph(request(size=64, upscale=passes(**iterative, chunking_size=[8, 24])), MAIN)
    assert layout(listed, "upscale_denoise_0_0") == (TILED_NODE, 64, 56)  # stride 8
    assert layout(listed, "upscale_denoise_0_1") == (TILED_NODE, 64, 32)  # 24 × 2, capped at 32


def test_the_keys_become_each_passes_fields() -> None:
    keys = UpscaleKeys(upscale="nearest", outscale=4, upscale_iterative=True, upscale_diffusion=True,
                       upscale_diffusion_chunking_size=[8, 24], upscale_diffusion_chunking_blur=12,
                       upscale_diffusion_scale_chunking_size=False)  # fmt: skip
    first, second = keys.upscale_settings().passes()
    assert (first.chunking_size, second.chunking_size) == (8, 24)
    assert first.chunking_blur == second.chunking_blur == 12
    assert (first.scale_chunking_size, first.scale_chunking_blur) == (False, True)
    # Without diffusion the keys have nothing to chunk.
    [plain] = UpscaleSettings(upscale="nearest", outscale=2, chunking_size=8).passes()
    assert (plain.steps, plain.chunking_size) == (None, None)


@pytest.mark.parametrize(("field", "value"), [("chunking_size", -8), ("chunking_blur", [4, -1])])
def test_negative_values_are_refused(field: str, value: Any) -> None:
    with pytest.raises(InvalidRequest, match=f"upscale_diffusion_{field}"):
        passes(outscale=4, iterative=True, **{field: value})
    with pytest.raises(ValidationError, match=f"upscale_diffusion_{field}"):
        UpscaleKeys.model_validate({"upscale": "nearest", "outscale": 2, f"upscale_diffusion_{field}": value})
