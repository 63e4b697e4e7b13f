"""`tiled_multi_diffusion_denoise_latents`: the tile layout, the blend, and InvokeAI-shaped graphs running it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from serve_app.domain.errors import GenerationFailed, InvalidRequest, JobCanceled
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.domain.ports import ExecutionEvent, NodeEvent
from serve_app.inference.executor import InProcessExecutor
from serve_app.inference.nodes.latents import DenoiseMask
from serve_app.inference.nodes.prompts import Conditioning
from serve_app.inference.nodes.tiled import tile_layout, tile_weights, tiled_denoise
from serve_app.inference.tiny import build_tiny_sd15
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import (
    SIZE,
    STEPS,
    Demo,
    graph_job,
    identifier,
    output_image,
    pixels,
    run_graph,
    session_graph,
    upload,
)
from tests.inference.graphs.test_controlnet import square, with_control
from tests.support.invokeai_graphs import GraphIds, enqueue_body, sd1_txt2img, sdxl_txt2img
from tests.support.tiny_models import controlnet_folder

TILED = "tiled_multi_diffusion_denoise_latents"


@pytest.fixture(scope="module")
def controlnet(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    folder = controlnet_folder(tmp_path_factory.mktemp("controlnets"), base="sd-1")
    return ModelSpec(name="tiny-controlnet", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path=str(folder),
                     type=ModelType.CONTROLNET)  # fmt: skip


def _tiled_graph(
    demo: Demo, *, width: int, height: int, tile: int, overlap: int, sdxl: bool = False
) -> tuple[dict[str, Any], GraphIds]:
    """The UI's SD1 (or SDXL) txt2img graph with its denoise_latents made the tiled node, prompts wired straight
    in (the tiled node takes one conditioning each, not a collection)."""
    if sdxl:
        graph, ids = sdxl_txt2img(identifier(demo.sdxl), width=width, height=height, steps=STEPS)
    else:
        graph, ids = sd1_txt2img(identifier(demo.sd15), width=width, height=height, steps=STEPS)
    denoise = ids.nodes["denoise_latents"]
    graph["nodes"][denoise].update(type=TILED, tile_width=tile, tile_height=tile, tile_overlap=overlap)
    collects = {
        ids.nodes["pos_cond_collect"]: ids.nodes["pos_cond"],
        ids.nodes["neg_cond_collect"]: ids.nodes["neg_cond"],
    }
    graph["edges"] = [e for e in graph["edges"] if e["destination"]["node_id"] not in collects]
    for e in graph["edges"]:
        if e["source"]["node_id"] in collects:
            e["source"] = {"node_id": collects[e["source"]["node_id"]], "field": "conditioning"}
    for collect in collects:
        del graph["nodes"][collect]
    return graph, ids


def test_the_layout_is_invokeais_fewest_evenly_spread_tiles() -> None:
    # 16 cells, tiles of 8 overlapping by at least 6: ceil((16 - 6) / (8 - 6)) = 5 tiles, 2 cells apart.
    tiles = tile_layout(8, 16, 8, 8, 6)
    assert [(t.left, t.right) for t in tiles] == [(0, 8), (2, 10), (4, 12), (6, 14), (8, 16)]
    assert {(t.top, t.bottom) for t in tiles} == {(0, 8)}
    assert (tiles[0].overlap_left, tiles[0].overlap_right, tiles[2].overlap_left) == (0, 6, 6)
    # Uneven: 20 cells by tiles of 8, overlap >= 2 -> 3 tiles at 0, 6, 12 (overlap spread to 2).
    assert [(t.left, t.right) for t in tile_layout(8, 20, 8, 8, 2)] == [(0, 8), (6, 14), (12, 20)]
    # A tile larger than the canvas shrinks to it; a canvas of one tile is one tile.
    assert [(t.top, t.bottom, t.left, t.right) for t in tile_layout(4, 8, 8, 8, 6)] == [(0, 4, 0, 8)]
    with pytest.raises(InvalidRequest, match="tile_overlap"):
        tile_layout(8, 16, 8, 8, 8)


def test_weights_ramp_down_across_overlaps_and_sum_to_one_between_two_neighbours() -> None:
    left, right = tile_layout(8, 12, 8, 8, 4)
    assert (left.right, right.left) == (8, 4)
    row_left, row_right = tile_weights(left)[0, 0, 0], tile_weights(right)[0, 0, 0]
    assert torch.equal(row_left[:4], torch.ones(4))  # the canvas edge: no fall-off
    assert (row_left > 0).all() and (row_right > 0).all()
    assert row_left[4] > row_left[5] > row_left[6] > row_left[7]
    torch.testing.assert_close(row_left[4:] + row_right[:4], torch.ones(4))
    # Rows are not overlapped (one row of tiles): every row of a tile weighs the same.
    assert torch.equal(tile_weights(left)[0, 0, 0], tile_weights(left)[0, 0, -1])


def test_a_tile_is_canceled_before_it_runs() -> None:
    pipe = build_tiny_sd15()
    calls: list[int] = []
    pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    polls = iter([False, False, False, True])  # denoise's own poll, then one per tile: the third tile stops
    conditioning = Conditioning(embeds=torch.zeros(1, 77, 32))
    noise = torch.randn(1, 4, 8, 24, generator=torch.Generator().manual_seed(0))
    with pytest.raises(JobCanceled):
        tiled_denoise(pipe.unet, EulerDiscreteScheduler.from_config(pipe.scheduler.config), conditioning,
                      conditioning, noise=noise, tile_width=64, tile_height=64, tile_overlap=32, steps=2,
                      should_stop=lambda: next(polls))  # fmt: skip
    assert len(tile_layout(8, 24, 8, 8, 4)) == 5 and len(calls) == 2


async def test_a_canvas_of_one_tile_denoises_exactly_as_denoise_latents(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    plain, plain_ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS)
    tiled, tiled_ids = _tiled_graph(demo, width=SIZE, height=SIZE, tile=SIZE, overlap=32)
    expected = pixels(await output_image(store, await run_graph(executor, plain, seed=5), plain_ids.output))
    run = await run_graph(executor, tiled, seed=5)
    assert np.array_equal(pixels(await output_image(store, run, tiled_ids.output)), expected)


async def test_a_wide_canvas_runs_tile_by_tile_with_progress_per_step(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    graph, ids = _tiled_graph(demo, width=2 * SIZE, height=SIZE, tile=SIZE, overlap=48)
    run = await run_graph(executor, graph, seed=5)
    denoise = ids.nodes["denoise_latents"]
    latents = run.output(denoise)
    assert latents["type"] == "latents_output" and (latents["width"], latents["height"]) == (2 * SIZE, SIZE)
    progress = run.of(denoise, "progress")
    assert [(event.step, event.total) for event in progress] == [(step, STEPS) for step in range(1, STEPS + 1)]
    assert all(event.image is not None and event.image["width"] == 2 * event.image["height"] for event in progress)
    tiled = pixels(await output_image(store, run, ids.output))
    assert tiled.shape == (SIZE, 2 * SIZE, 3)

    plain_graph, plain_ids = sd1_txt2img(identifier(demo.sd15), width=2 * SIZE, height=SIZE, steps=STEPS)
    plain = pixels(await output_image(store, await run_graph(executor, plain_graph, seed=5), plain_ids.output))
    assert np.abs(tiled - plain).mean() > 1  # the same noise, denoised by windows of the model's size


async def test_an_overlap_as_large_as_the_tile_fails_the_node(executor: InProcessExecutor, demo: Demo) -> None:
    graph, ids = _tiled_graph(demo, width=2 * SIZE, height=SIZE, tile=SIZE, overlap=SIZE)
    session = session_graph(enqueue_body(graph, seeds=[5], prompts=["a cat"]))
    events: list[ExecutionEvent] = []
    with pytest.raises(GenerationFailed):
        async for event in executor.execute(graph_job(session)):
            events.append(event)
    error = events[-1]
    assert isinstance(error, NodeEvent) and error.kind == "error"
    assert error.source_node_id == ids.nodes["denoise_latents"]
    assert error.error_type == "InvalidRequest" and "tile_overlap" in (error.error_message or "")


async def test_controlnet_images_are_cut_per_tile(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore, controlnet: ModelSpec
) -> None:
    model = controlnet
    edges = await upload(store, square(2 * SIZE).resize((2 * SIZE, SIZE)))

    async def wide(control: bool, tile: int) -> np.ndarray:
        graph, ids = _tiled_graph(demo, width=2 * SIZE, height=SIZE, tile=tile, overlap=48)
        if control:
            graph = with_control(graph, ids.nodes["denoise_latents"], edges, model, control_weight=2.0)
        run = await run_graph(executor, graph, seed=9, models={model.key: model})
        return pixels(await output_image(store, run, ids.output))

    guided, unguided = await wide(True, SIZE), await wide(False, SIZE)
    assert np.abs(guided - unguided).mean() > 0.5
    # One tile over the whole canvas (tile 128 wide, 64 high): the control image uncut, as denoise_latents has it.
    graph, ids = sd1_txt2img(identifier(demo.sd15), width=2 * SIZE, height=SIZE, steps=STEPS)
    graph = with_control(graph, ids.nodes["denoise_latents"], edges, model, control_weight=2.0)
    run = await run_graph(executor, graph, seed=9, models={model.key: model})
    plain = pixels(await output_image(store, run, ids.output))
    assert np.array_equal(await wide(True, 2 * SIZE), plain)


def test_a_mask_keeps_its_area_across_tiles() -> None:
    pipe = build_tiny_sd15()
    conditioning = Conditioning(embeds=torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1)))
    latents = torch.randn(1, 4, 8, 24, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(1, 4, 8, 24, generator=torch.Generator().manual_seed(3))
    keep = torch.zeros(1, 1, 8, 24)
    keep[..., :10] = 1  # white keeps: the left 10 cells (two tiles reach into them), the rest is repainted
    result = tiled_denoise(pipe.unet, EulerDiscreteScheduler.from_config(pipe.scheduler.config), conditioning,
                           conditioning, noise=noise, latents=latents, tile_width=64, tile_height=64, tile_overlap=32,
                           steps=3, denoise_mask=DenoiseMask(mask=keep))  # fmt: skip
    assert torch.equal(result[..., :10], latents[..., :10])
    assert (result[..., 10:] - latents[..., 10:]).abs().mean() > 0.1


async def test_an_sdxl_canvas_runs_tile_by_tile(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    graph, ids = _tiled_graph(demo, width=2 * SIZE, height=SIZE, tile=SIZE, overlap=32, sdxl=True)
    run = await run_graph(executor, graph, seed=5)
    assert len(run.of(ids.nodes["denoise_latents"], "progress")) == STEPS
    assert pixels(await output_image(store, run, ids.output)).shape == (SIZE, 2 * SIZE, 3)
