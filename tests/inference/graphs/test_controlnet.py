"""ControlNet graphs: `canny_edge_detection` → `controlnet` → `denoise_latents.control`, with tiny ControlNets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.inference.executor import InProcessExecutor
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
    run_session,
    session_graph,
    upload,
)
from tests.support.invokeai_graphs import enqueue_body, sd1_txt2img, sdxl_txt2img
from tests.support.tiny_models import controlnet_folder


@pytest.fixture(scope="module")
def controlnets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelSpec]:
    root: Path = tmp_path_factory.mktemp("controlnets")
    return {
        base: ModelSpec(
            name=f"tiny-controlnet-{base}",
            family=ModelFamily(base),
            format=ModelFormat.DIFFUSERS,
            path=str(controlnet_folder(root, base=base)),
            type=ModelType.CONTROLNET,
        )  # fmt: skip
        for base in ("sd-1", "sdxl")
    }


def square(size: int = SIZE) -> Image.Image:
    """A bright square on a dark background: canny finds exactly its outline."""
    array = np.full((size, size, 3), 30, dtype=np.uint8)
    array[16:48, 16:48] = 220
    return Image.fromarray(array)


def with_control(graph: dict[str, Any], denoise: str, image: str, model: ModelSpec, **fields: Any) -> dict[str, Any]:
    """`graph` with a canny detector and a controlnet node feeding `denoise`'s control input."""
    nodes = dict(graph["nodes"])
    nodes["canny"] = {"id": "canny", "type": "canny_edge_detection", "image": {"image_name": image}}
    nodes["cn"] = {"id": "cn", "type": "controlnet", "control_model": identifier(model), **fields}
    edges = [*graph["edges"],
             {"source": {"node_id": "canny", "field": "image"}, "destination": {"node_id": "cn", "field": "image"}},
             {"source": {"node_id": "cn", "field": "control"},
              "destination": {"node_id": denoise, "field": "control"}}]  # fmt: skip
    return {**graph, "nodes": nodes, "edges": edges}


async def _sd1(executor: InProcessExecutor, demo: Demo, store: FileObjectStore, controlnets: dict[str, ModelSpec],
               image: str | None, **fields: Any) -> np.ndarray:  # fmt: skip
    graph, ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS)
    model = controlnets["sd-1"]
    if image is not None:
        graph = with_control(graph, ids.nodes["denoise_latents"], image, model, **fields)
    run = await run_graph(executor, graph, seed=11, models={model.key: model})
    return pixels(await output_image(store, run, ids.output))


async def test_canny_detection_is_an_edge_map_and_img_lerp_inverts(
    executor: InProcessExecutor, store: FileObjectStore
) -> None:
    name = await upload(store, square())
    graph = {
        "id": "canny",
        "nodes": {
            "edges": {"id": "edges", "type": "canny_edge_detection", "image": {"image_name": name}},
            "legacy": {
                "id": "legacy",
                "type": "canny_image_processor",
                "image": {"image_name": name},
                "detect_resolution": SIZE,
                "image_resolution": SIZE,
            },  # fmt: skip
            "inverted": {"id": "inverted", "type": "img_lerp", "image": {"image_name": name}, "min": 255, "max": 0},
        },
        "edges": [],
    }
    run = await run_session(executor, graph)
    edges = pixels(await output_image(store, run, "edges"))
    assert set(np.unique(edges)) == {0, 255}
    assert (edges[:, :, 0] == edges[:, :, 1]).all()  # grey: the same map in every channel
    outline = edges[:, :, 0] == 255
    assert outline[14:18, 16:48].any(axis=0).all() and outline[46:50, 16:48].any(axis=0).all()
    assert not outline[22:42, 22:42].any() and not outline[:10].any()  # flat areas have no edges
    legacy = pixels(await output_image(store, run, "legacy"))
    assert legacy.shape == (SIZE, SIZE, 3) and np.array_equal(legacy, edges)
    inverted = pixels(await output_image(store, run, "inverted"))
    assert np.array_equal(inverted, 255 - pixels(square()))


async def test_a_controlnet_changes_the_image_and_weight_zero_changes_nothing(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore, controlnets: dict[str, ModelSpec]
) -> None:
    image = await upload(store, square())
    plain = await _sd1(executor, demo, store, controlnets, None)
    controlled = await _sd1(executor, demo, store, controlnets, image)
    weightless = await _sd1(executor, demo, store, controlnets, image, control_weight=0.0)
    assert np.abs(controlled - plain).mean() > 1
    assert np.abs(weightless - plain).max() <= 1  # zero residuals: the UNet's output as it was

    # Only during the first step, and cfg-side only: each a different image again.
    first_step = await _sd1(executor, demo, store, controlnets, image, begin_step_percent=0.0, end_step_percent=0.0)
    unbalanced = await _sd1(executor, demo, store, controlnets, image, control_mode="unbalanced")
    more_prompt = await _sd1(executor, demo, store, controlnets, image, control_mode="more_prompt")
    for other in (first_step, unbalanced, more_prompt):
        assert np.abs(other - controlled).mean() > 0.5
        assert np.abs(other - plain).mean() > 0.5


async def test_an_sdxl_controlnet_runs_with_the_sdxl_model(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore, controlnets: dict[str, ModelSpec]
) -> None:
    image = await upload(store, square())
    graph, ids = sdxl_txt2img(identifier(demo.sdxl), width=SIZE, height=SIZE, steps=2)
    model = controlnets["sdxl"]
    plain = pixels(await output_image(store, await run_graph(executor, graph, seed=2), ids.output))
    controlled_graph = with_control(graph, ids.nodes["denoise_latents"], image, model, control_mode="more_control")
    run = await run_graph(executor, controlled_graph, seed=2, models={model.key: model})
    assert run.output("cn")["type"] == "control_output"
    assert np.abs(pixels(await output_image(store, run, ids.output)) - plain).mean() > 0.5


async def test_a_controlnet_of_another_base_fails_the_denoise_node(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore, controlnets: dict[str, ModelSpec]
) -> None:
    image = await upload(store, square())
    graph, ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=2)
    model = controlnets["sdxl"]
    session = session_graph(enqueue_body(with_control(graph, ids.nodes["denoise_latents"], image, model),
                                         seeds=[1], prompts=["a cat"]))  # fmt: skip
    with pytest.raises(GenerationFailed) as failure:
        async for _ in executor.execute(graph_job(session, {model.key: model})):
            pass
    assert "cannot be used with demo-sd15" in str(failure.value)


async def test_collected_controlnets_add_up(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore, controlnets: dict[str, ModelSpec]
) -> None:
    """The canvas wires controlnets through a `collect` node: a second one at weight 0 adds nothing."""
    image = await upload(store, square())
    model = controlnets["sd-1"]
    graph, ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS)
    denoise = ids.nodes["denoise_latents"]

    async def generate(nodes: dict[str, Any], edges: list[dict[str, Any]]) -> np.ndarray:
        run = await run_graph(
            executor,
            {**graph, "nodes": {**graph["nodes"], **nodes}, "edges": [*graph["edges"], *edges]},
            seed=11,
            models={model.key: model},
        )
        return pixels(await output_image(store, run, ids.output))

    def link(source: str, destination: str, field: str) -> dict[str, Any]:
        return {
            "source": {"node_id": source, "field": field if source != "collect" else "collection"},
            "destination": {"node_id": destination, "field": "item" if destination == "collect" else field},
        }

    def controlnet(node_id: str, weight: float) -> dict[str, Any]:
        return {
            "id": node_id,
            "type": "controlnet",
            "control_model": identifier(model),
            "image": {"image_name": image},
            "control_weight": weight,
        }

    lone = await generate({"cn": controlnet("cn", 1.0)}, [link("cn", denoise, "control")])
    collected = await generate(
        {"cn0": controlnet("cn0", 1.0), "cn1": controlnet("cn1", 0.0), "collect": {"id": "collect", "type": "collect"}},
        [link("cn0", "collect", "control"), link("cn1", "collect", "control"), link("collect", denoise, "control")],
    )
    plain = await generate({}, [])
    assert np.abs(collected - lone).max() <= 1
    assert np.abs(collected - plain).mean() > 1
