"""SD 1.5 and SDXL text-to-image graphs as the web UI builds them: events, stored image, session, determinism."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from serve_app.domain.images import ImageCategory
from serve_app.inference.executor import InProcessExecutor
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import (
    SIZE,
    STEPS,
    Demo,
    Run,
    identifier,
    output_image,
    pixels,
    run_graph,
    stored_png,
)
from tests.support.invokeai_graphs import sd1_txt2img, sdxl_txt2img


def _assert_node_events_well_formed(run: Run) -> None:
    """Every prepared node: started, then (only for denoising) progress, then complete; nodes never interleave."""
    session = run.result.session
    assert session is not None
    prepared_ids = [event.invocation["id"] for event in run.events if event.kind == "started"]
    assert sorted(prepared_ids) == sorted(session["results"])
    index = 0
    for prepared in prepared_ids:
        block = []
        while index < len(run.events) and run.events[index].invocation["id"] == prepared:
            block.append(run.events[index])
            index += 1
        kinds = [event.kind for event in block]
        assert kinds[0] == "started" and kinds[-1] == "complete", kinds
        assert set(kinds[1:-1]) <= {"progress"}
        assert block[-1].result == session["results"][prepared]
        assert all(event.source_node_id == session["prepared_source_mapping"][prepared] for event in block)
    assert index == len(run.events)


def _preview(data_url: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert data_url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :])))


async def test_sd1_txt2img_runs_every_node_and_stores_the_image_with_invokeai_chunks(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    graph, ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS)
    run = await run_graph(executor, graph, seed=1234, prompt="a photo of a cat")

    _assert_node_events_well_formed(run)
    session = run.result.session
    assert session is not None
    assert session["errors"] == {}
    assert set(session["source_prepared_mapping"]) == set(graph["nodes"])
    assert all(len(prepared) == 1 for prepared in session["source_prepared_mapping"].values())
    assert set(graph["nodes"]) <= set(session["executed"])

    # Progress: one per step, only from denoise_latents, each with a latent-resolution JPEG preview.
    progress = [event for event in run.events if event.kind == "progress"]
    assert {event.source_node_id for event in progress} == {ids.nodes["denoise_latents"]}
    assert [(event.step, event.total) for event in progress] == [(step, STEPS) for step in range(1, STEPS + 1)]
    assert progress[-1].percentage == 1.0 and progress[-1].message == "Denoising"
    for event in progress:
        assert event.image is not None and (event.image["width"], event.image["height"]) == (SIZE // 8, SIZE // 8)
        assert _preview(event.image["dataURL"]).size == (SIZE // 8, SIZE // 8)

    # Handles shaped like InvokeAI's golden session results.
    loader = run.output(ids.nodes["sd1_model_loader"])
    assert loader["type"] == "model_loader_output"
    assert loader["unet"]["unet"] == {**identifier(demo.sd15), "submodel_type": "unet"}
    assert loader["unet"]["scheduler"]["submodel_type"] == "scheduler"
    assert loader["unet"]["loras"] == [] and loader["unet"]["seamless_axes"] == []
    assert loader["clip"]["tokenizer"]["submodel_type"] == "tokenizer"
    assert loader["clip"]["text_encoder"]["submodel_type"] == "text_encoder"
    assert loader["clip"]["skipped_layers"] == 0 and loader["clip"]["loras"] == []
    assert loader["vae"] == {"vae": {**identifier(demo.sd15), "submodel_type": "vae"}, "seamless_axes": []}
    assert run.output(ids.nodes["clip_skip"])["clip"] == loader["clip"]
    noise = run.output(ids.nodes["noise"])
    assert noise["type"] == "noise_output" and noise["noise"]["seed"] == 1234
    assert noise["noise"]["latents_name"].startswith("Tensor_") and (noise["width"], noise["height"]) == (SIZE, SIZE)
    conditioning = run.output(ids.nodes["pos_cond"])["conditioning"]
    assert conditioning["conditioning_name"].startswith("ConditioningFieldData_")
    assert run.output(ids.nodes["pos_cond_collect"])["collection"] == [conditioning]
    latents = run.output(ids.nodes["denoise_latents"])
    assert latents["type"] == "latents_output" and (latents["width"], latents["height"]) == (SIZE, SIZE)

    # The output image: in the completion event, in the session, in the store with InvokeAI's chunks.
    result = run.output(ids.output)
    assert result["type"] == "image_output" and (result["width"], result["height"]) == (SIZE, SIZE)
    (complete,) = run.of(ids.output, "complete")
    (generated,) = complete.images
    assert generated.name == result["image"]["image_name"]
    assert not generated.is_intermediate and generated.category is ImageCategory.GENERAL
    assert generated.session_id == session["id"] and generated.board_id is None
    metadata = run.output(ids.nodes["core_metadata"])["metadata"]
    assert generated.metadata == metadata
    assert metadata["seed"] == 1234 and metadata["positive_prompt"] == "a photo of a cat"
    image, chunks = await stored_png(store, generated.name)
    assert image.size == (SIZE, SIZE)
    assert json.loads(chunks["invokeai_metadata"]) == metadata
    assert json.loads(chunks["invokeai_graph"]) == run.graph
    assert all(not event.images for event in run.events if event.source_node_id != ids.output)


async def test_the_same_seed_reproduces_the_pixels_and_another_seed_changes_them(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    graph, ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS)
    first = pixels(await output_image(store, await run_graph(executor, graph, seed=1), ids.output))
    again = pixels(await output_image(store, await run_graph(executor, graph, seed=1), ids.output))
    other = pixels(await output_image(store, await run_graph(executor, graph, seed=2), ids.output))

    assert np.array_equal(first, again)
    assert np.abs(first - other).mean() > 2


async def test_the_prompt_and_clip_skip_reach_the_text_encoder(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    graph, ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS)
    skipped, skipped_ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS, clip_skip=1)
    cat = pixels(await output_image(store, await run_graph(executor, graph, prompt="a cat"), ids.output))
    dog = pixels(await output_image(store, await run_graph(executor, graph, prompt="the dog and the tree"), ids.output))
    skip_run = await run_graph(executor, skipped, prompt="a cat")

    assert skip_run.output(skipped_ids.nodes["clip_skip"])["clip"]["skipped_layers"] == 1
    assert np.abs(cat - dog).mean() > 0.5
    assert np.abs(cat - pixels(await output_image(store, skip_run, skipped_ids.output))).mean() > 0.5


async def test_sdxl_txt2img(executor: InProcessExecutor, demo: Demo, store: FileObjectStore) -> None:
    graph, ids = sdxl_txt2img(identifier(demo.sdxl), width=SIZE, height=SIZE, steps=STEPS, board_id="board-1")
    run = await run_graph(executor, graph, seed=5)
    again = await run_graph(executor, graph, seed=5)

    _assert_node_events_well_formed(run)
    loader = run.output(ids.nodes["sdxl_model_loader"])
    assert loader["type"] == "sdxl_model_loader_output"
    assert loader["clip2"]["tokenizer"]["submodel_type"] == "tokenizer_2"
    assert loader["clip2"]["text_encoder"]["submodel_type"] == "text_encoder_2"
    assert len([e for e in run.events if e.kind == "progress"]) == STEPS
    (complete,) = run.of(ids.output, "complete")
    (generated,) = complete.images
    assert generated.board_id == "board-1" and (generated.width, generated.height) == (SIZE, SIZE)
    image = await output_image(store, run, ids.output)
    assert pixels(image).std() > 1  # not a flat image
    assert np.array_equal(pixels(image), pixels(await output_image(store, again, ids.output)))
