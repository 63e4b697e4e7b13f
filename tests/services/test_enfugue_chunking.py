"""Enfugue's `chunking_size` / `chunking_blur` as the tiled MultiDiffusion node in the built graphs."""

from __future__ import annotations

from typing import Any

import pytest

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest, RegionNode
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.domain.presets import ModelPreset
from serve_app.services.enfugue_chunking import TILED_NODE, Chunking, chunking_of
from serve_app.services.generation_graphs import GraphExtras, GraphModel, generation_graph
from serve_app.services.model_resolution import apply_preset

MAIN = ModelSpec(name="demo", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path="/models/demo")
SDXL = ModelSpec(name="xl", family=ModelFamily.SDXL, format=ModelFormat.DIFFUSERS, path="/models/xl")
REFINER = ModelSpec(name="refiner", family=ModelFamily.SDXL_REFINER, format=ModelFormat.DIFFUSERS, path="/m/r")


def types(graph: dict[str, Any]) -> dict[str, str]:
    return {node_id: node["type"] for node_id, node in graph["nodes"].items()}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, Chunking(size=512, tile=512, overlap=448)),  # Enfugue's default stride: size // 8 = 64
        ({"chunking_size": 128}, Chunking(size=512, tile=512, overlap=384)),
        ({"chunking_size": 60}, Chunking(size=512, tile=512, overlap=448)),  # 452 rounded down to whole cells
        ({"chunking_size": 4}, Chunking(size=512, tile=512, overlap=504)),  # at most one cell less than the tile
        ({"chunking_size": 512}, Chunking(size=512, tile=512, overlap=8)),  # the node needs some overlap
        ({"size": 64}, Chunking(size=64, tile=64, overlap=56)),
        ({"size": 100, "chunking_size": 20}, Chunking(size=100, tile=96, overlap=80)),
        ({"chunking_size": 0}, None),
    ],
)
def test_the_stride_becomes_the_overlap_of_size_wide_tiles(fields: dict[str, Any], expected: Chunking | None) -> None:
    assert chunking_of(GenerationRequest(**fields), MAIN.native_size) == expected


def test_the_native_size_is_the_window_when_the_request_names_none() -> None:
    assert chunking_of(GenerationRequest(), SDXL.native_size) == Chunking(size=1024, tile=1024, overlap=896)


@pytest.mark.parametrize("field", ["chunking_size", "chunking_blur"])
def test_negative_values_are_refused(field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        generation_graph(GenerationRequest(width=1024, height=512, **{field: -8}), MAIN)


def test_only_a_canvas_larger_than_the_size_is_chunked() -> None:
    wide = generation_graph(GenerationRequest(width=1024, height=512, num_images=2, seed=1), MAIN)
    assert types(wide)["denoise_0"] == types(wide)["denoise_1"] == TILED_NODE
    assert "denoise_latents" not in types(wide).values()
    node = wide["nodes"]["denoise_0"]
    assert (node["tile_width"], node["tile_height"], node["tile_overlap"]) == (512, 512, 448)
    assert (node["steps"], node["scheduler"], node["denoising_start"]) == (40, "euler", 0.0)
    edges = {(e["source"]["node_id"], e["destination"]["field"]) for e in wide["edges"]
             if e["destination"]["node_id"] == "denoise_0"}  # fmt: skip
    assert edges == {("model", "unet"), ("positive", "positive_conditioning"),
                     ("negative", "negative_conditioning"), ("noise_0", "noise")}  # fmt: skip

    fits = generation_graph(GenerationRequest(width=512, height=512, seed=1), MAIN)
    assert types(fits)["denoise_0"] == "denoise_latents" and TILED_NODE not in types(fits).values()
    tall = generation_graph(GenerationRequest(size=64, width=64, height=128, seed=1), MAIN)
    assert types(tall)["denoise_0"] == TILED_NODE and tall["nodes"]["denoise_0"]["tile_overlap"] == 56
    off = generation_graph(GenerationRequest(width=1024, height=512, chunking_size=0, seed=1), MAIN)
    assert types(off)["denoise_0"] == "denoise_latents"


def test_an_inpaint_is_chunked_with_its_mask() -> None:
    graph = generation_graph(GenerationRequest(width=1024, height=512, image="i.png", mask="m.png", seed=1), MAIN)
    assert types(graph)["denoise_0"] == TILED_NODE
    fields = {e["destination"]["field"] for e in graph["edges"] if e["destination"]["node_id"] == "denoise_0"}
    assert {"latents", "denoise_mask", "noise"} <= fields


def test_canvas_regions_larger_than_the_size_are_chunked_alone() -> None:
    request = GenerationRequest(size=64, width=192, height=64, seed=1, nodes=[
        RegionNode(x=0, y=0, w=128, h=64, prompt="a wide field"),
        RegionNode(x=128, y=0, w=64, h=64, prompt="a tree"),
    ])  # fmt: skip
    graph = generation_graph(request, MAIN)
    assert types(graph)["region_0_0_denoise"] == TILED_NODE
    assert types(graph)["region_1_0_denoise"] == "denoise_latents"


def test_the_refiner_pass_of_a_chunked_step_is_chunked_too() -> None:
    extras = GraphExtras(refiner=GraphModel(REFINER))
    request = GenerationRequest(width=2048, height=1024, seed=1, refiner="refiner", refiner_strength=0.3)
    graph = generation_graph(request, SDXL, extras=extras)
    assert types(graph)["denoise_0"] == types(graph)["refiner_denoise_0"] == TILED_NODE
    assert graph["nodes"]["denoise_0"]["denoising_end"] == pytest.approx(0.7)
    assert graph["nodes"]["refiner_denoise_0"]["tile_width"] == 1024


def test_a_presets_chunking_applies_when_the_request_sets_none() -> None:
    preset = ModelPreset(name="wide", checkpoint="demo", config={"chunking_size": 256, "chunking_blur": 32})
    applied = apply_preset(GenerationRequest(), preset)
    assert (applied.chunking_size, applied.chunking_blur) == (256, 32)
    own = apply_preset(GenerationRequest(chunking_size=0), preset)
    assert (own.chunking_size, own.chunking_blur) == (0, 32)
