"""The SDXL refiner in InvokeAI-shaped graphs (`sdxl_refiner_model_loader`, `sdxl_refiner_compel_prompt`, a second
`denoise_latents` on the refiner's UNet), and tiny refiner / inpainting models probed and loaded from disk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelVariant
from serve_app.inference.executor import InProcessExecutor
from serve_app.inference.loading import load_parts
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.nodes.components import ModelComponents
from serve_app.inference.nodes.prompts import encode_sdxl_refiner_prompt
from serve_app.inference.runner import GenerationRunner
from serve_app.inference.tiny import build_tiny_sd15_inpaint, build_tiny_sdxl_refiner, ensure_demo_models
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.model_probe import probe
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import SIZE, STEPS, identifier, output_image, pixels, run_graph
from tests.support import tiny_models
from tests.support.invokeai_graphs import sdxl_txt2img

REFINER_START = 0.5


@dataclass(frozen=True)
class RefinerModels:
    catalog: DirectoryModelCatalog
    sdxl: ModelSpec
    refiner: ModelSpec
    store: FileObjectStore
    executor: InProcessExecutor


@pytest.fixture(scope="module")
def refiner_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RefinerModels]:
    root = tmp_path_factory.mktemp("refiner-models")
    ensure_demo_models(root)
    tiny_models.sdxl_refiner_folder(root, name="tiny-refiner")
    catalog = DirectoryModelCatalog(root, "demo-sd15")
    store = FileObjectStore(tmp_path_factory.mktemp("refiner-objects"))
    runner = GenerationRunner(ModelCache(), device="cpu", dtype=torch.float32)
    executor = InProcessExecutor(runner=runner, catalog=catalog, store=store, progress_interval=0.0)
    yield RefinerModels(catalog, catalog.resolve("demo-sdxl"), catalog.resolve("tiny-refiner"), store, executor)
    executor.close()


# --- tiny models on disk --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["folder", "single_file"])
def test_a_tiny_refiner_probes_as_sdxl_refiner_and_loads_without_clip_l(tmp_path: Path, layout: str) -> None:
    path = getattr(tiny_models, f"sdxl_refiner_{layout}")(tmp_path)

    probed = probe(path)

    assert (probed.base, probed.variant) == (ModelFamily.SDXL_REFINER, ModelVariant.NORMAL)
    spec = ModelSpec(name=probed.name, family=probed.base, format=probed.format, path=str(path),
                     config_path=probed.config_path)  # fmt: skip
    parts = load_parts(spec, "unet", torch.device("cpu"), torch.float32)
    # A single file yields every part at once: the refiner's five, no CLIP-L among them.
    expected = {"unet"} if layout == "folder" else {"text_encoder_2", "tokenizer_2", "unet", "scheduler", "vae"}
    assert set(parts) == expected
    reference = build_tiny_sdxl_refiner().unet.state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in parts["unet"].state_dict().items())
    # Five micro-conditioning numbers (original size, crop, aesthetic score) feed its added embedding.
    assert parts["unet"].config.projection_class_embeddings_input_dim == 5 * 8 + 32


@pytest.mark.parametrize("layout", ["folder", "single_file"])
def test_a_tiny_inpainting_model_probes_as_inpaint_and_loads_its_nine_channel_unet(tmp_path: Path, layout: str) -> None:
    path = getattr(tiny_models, f"sd1_inpaint_{layout}")(tmp_path)

    probed = probe(path)

    assert (probed.base, probed.variant) == (ModelFamily.SD1, ModelVariant.INPAINT)
    spec = ModelSpec(name=probed.name, family=probed.base, format=probed.format, path=str(path),
                     config_path=probed.config_path, variant=ModelVariant.INPAINT)  # fmt: skip
    unet = load_parts(spec, "unet", torch.device("cpu"), torch.float32)["unet"]
    assert unet.config.in_channels == 9
    reference = build_tiny_sd15_inpaint().unet.state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in unet.state_dict().items())


def test_refiner_conditioning_carries_the_aesthetic_score(refiner_models: RefinerModels) -> None:
    components = ModelComponents(ModelCache())
    (encoder,) = components.text_encoders(refiner_models.refiner)

    high = encode_sdxl_refiner_prompt(encoder, "a cat", original_width=64, original_height=32, aesthetic_score=6.0)
    low = encode_sdxl_refiner_prompt(encoder, "a cat", original_width=64, original_height=32, aesthetic_score=2.5)

    assert high.add_time_ids is not None and low.add_time_ids is not None
    assert high.add_time_ids.tolist() == [[32.0, 64.0, 0.0, 0.0, 6.0]]
    assert low.add_time_ids.tolist()[0][-1] == 2.5
    assert high.embeds.shape == (1, 77, 64)  # OpenCLIP alone (64 wide in the tiny model), no CLIP-L
    assert torch.equal(high.embeds, low.embeds)
    empty = encode_sdxl_refiner_prompt(encoder, "")
    assert empty.embeds.abs().sum() > 0  # encoded, not zeroed, as InvokeAI's refiner prompt


# --- graphs ---------------------------------------------------------------------------------------------------


def _with_refiner(
    graph: dict[str, Any], ids: dict[str, str], refiner: dict[str, Any], *, start: float, negative_score: float = 2.5
) -> dict[str, Any]:
    """What the web UI's `addSDXLRefiner` does to an SDXL graph: the base denoise stops at `start`, a refiner
    denoise takes its latents from there on the refiner's UNet and conditioning, and feeds the decode."""
    nodes, edges = graph["nodes"], graph["edges"]
    denoise, l2i = ids["denoise_latents"], ids["canvas_output"]
    edges[:] = [e for e in edges if not (e["source"]["node_id"] == denoise and e["source"]["field"] == "latents")]
    nodes[denoise]["denoising_end"] = start

    def add(node_id: str, node_type: str, **fields: Any) -> None:
        nodes[node_id] = {"id": node_id, "type": node_type, "is_intermediate": True, "use_cache": True, **fields}

    def edge(source: str, field: str, destination: str, destination_field: str) -> None:
        edges.append({"source": {"node_id": source, "field": field},
                      "destination": {"node_id": destination, "field": destination_field}})  # fmt: skip

    add("refiner_model_loader", "sdxl_refiner_model_loader", model=refiner)
    add("refiner_pos_cond", "sdxl_refiner_compel_prompt", aesthetic_score=6.0, original_width=SIZE,
        original_height=SIZE)  # fmt: skip
    add("refiner_neg_cond", "sdxl_refiner_compel_prompt", style="", aesthetic_score=negative_score)
    add("refiner_denoise_latents", "denoise_latents", cfg_scale=5.0, steps=STEPS, scheduler="euler",
        denoising_start=start, denoising_end=1)  # fmt: skip
    edge(ids["positive_prompt"], "value", "refiner_pos_cond", "style")
    for cond in ("refiner_pos_cond", "refiner_neg_cond"):
        edge("refiner_model_loader", "clip2", cond, "clip2")
    edge("refiner_model_loader", "unet", "refiner_denoise_latents", "unet")
    edge("refiner_pos_cond", "conditioning", "refiner_denoise_latents", "positive_conditioning")
    edge("refiner_neg_cond", "conditioning", "refiner_denoise_latents", "negative_conditioning")
    edge(denoise, "latents", "refiner_denoise_latents", "latents")
    edge("refiner_denoise_latents", "latents", l2i, "latents")
    return graph


async def _sdxl_image(models: RefinerModels, *, refiner: bool, start: float = REFINER_START,
                      negative_score: float = 2.5) -> tuple[np.ndarray, Any]:  # fmt: skip
    graph, ids = sdxl_txt2img(identifier(models.sdxl), width=SIZE, height=SIZE, steps=STEPS)
    if refiner:
        graph = _with_refiner(graph, ids.nodes, identifier(models.refiner), start=start,
                              negative_score=negative_score)  # fmt: skip
    run = await run_graph(models.executor, graph, seed=11)
    return pixels(await output_image(models.store, run, ids.output)), run


async def test_an_sdxl_graph_with_refiner_nodes_finishes_on_the_refiner_unet(refiner_models: RefinerModels) -> None:
    base, _ = await _sdxl_image(refiner_models, refiner=False)
    refined, run = await _sdxl_image(refiner_models, refiner=True)
    again, _ = await _sdxl_image(refiner_models, refiner=True)
    other_score, _ = await _sdxl_image(refiner_models, refiner=True, negative_score=9.0)

    assert np.abs(refined - base).mean() > 1  # the last half ran on another UNet
    assert np.array_equal(refined, again)
    assert np.abs(other_score - refined).mean() > 0  # the aesthetic score reaches the refiner UNet
    key = refiner_models.refiner.key
    loads = {(kind, submodel) for kind, model, submodel in run.loads() if model == key}
    assert {("started", "unet"), ("started", "text_encoder_2")} <= loads
    assert ("started", "text_encoder") not in loads
    loader = run.output("refiner_model_loader")
    assert loader["type"] == "sdxl_refiner_model_loader_output"
    assert loader["clip2"]["text_encoder"]["submodel_type"] == "text_encoder_2"
    steps = run.of("refiner_denoise_latents", "progress")
    assert steps and steps[-1].total == STEPS // 2  # the second half of the schedule


async def test_refiner_nodes_refuse_models_of_other_families(refiner_models: RefinerModels) -> None:
    graph, ids = sdxl_txt2img(identifier(refiner_models.sdxl), width=SIZE, height=SIZE, steps=STEPS)
    # The base SDXL model is no refiner; the refiner's conditioning cannot drive the base UNet either.
    graph = _with_refiner(graph, ids.nodes, identifier(refiner_models.sdxl), start=REFINER_START)
    with pytest.raises(GenerationFailed, match="not an SDXL refiner"):
        await run_graph(refiner_models.executor, graph)

    graph, ids = sdxl_txt2img(identifier(refiner_models.sdxl), width=SIZE, height=SIZE, steps=STEPS)
    graph = _with_refiner(graph, ids.nodes, identifier(refiner_models.refiner), start=REFINER_START)
    for edge in graph["edges"]:
        if edge["destination"] == {"node_id": "refiner_denoise_latents", "field": "unet"}:
            edge["source"]["node_id"] = ids.nodes["sdxl_model_loader"]
    with pytest.raises(GenerationFailed, match="needs conditioning from sdxl_compel_prompt"):
        await run_graph(refiner_models.executor, graph)


def test_the_refiner_family_runs_as_an_sdxl_img2img_pipeline(refiner_models: RefinerModels) -> None:
    pipe = ModelComponents(ModelCache()).pipeline(refiner_models.refiner)

    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert pipe.text_encoder is None and pipe.config.requires_aesthetics_score
    assert refiner_models.refiner.format is ModelFormat.DIFFUSERS
