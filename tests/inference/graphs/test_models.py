"""Models in graphs: load reports in InvokeAI's order, the job's model snapshot, embeddings and peft LoRAs in
prompts, and a cache budget too small for anything that still generates the same pixels."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from serve_app.domain.errors import GenerationFailed, ModelNotFound
from serve_app.domain.jobs import ClaimedJob
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.domain.ports import ExecutionResult, ModelLoadEvent, NodeEvent
from serve_app.inference.executor import InProcessExecutor
from serve_app.inference.graph_context import MappingCatalog
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.runner import GenerationRunner
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import (
    SIZE,
    STEPS,
    Demo,
    Run,
    graph_job,
    identifier,
    output_image,
    pixels,
    run_graph,
    session_graph,
)
from tests.support.invokeai_graphs import enqueue_body, sd1_txt2img, sdxl_txt2img
from tests.support.tiny_models import peft_lora, textual_inversion


def _snapshot(*specs: ModelSpec) -> dict[str, ModelSpec]:
    return {spec.key: spec for spec in specs}


def _embedding(path: Path, name: str, family: ModelFamily) -> ModelSpec:
    return ModelSpec(
        name=name, family=family, format=ModelFormat.EMBEDDING_FILE, path=str(path), type=ModelType.EMBEDDING
    )


def _sd1(demo: Demo, model: ModelSpec | None = None, **options: Any) -> tuple[dict[str, Any], Any]:
    return sd1_txt2img(identifier(model or demo.sd15), width=SIZE, height=SIZE, steps=STEPS, **options)


async def _pixels(
    executor: InProcessExecutor, store: FileObjectStore, graph: tuple[dict[str, Any], Any], **options: Any
) -> np.ndarray:
    run = await run_graph(executor, graph[0], seed=11, **options)
    return pixels(await output_image(store, run, graph[1].output))


def _between(run: Run, node_type: str) -> list[tuple[str, str | None]]:
    """(kind, submodel) of the load reports inside each node of `node_type`, in order."""
    found: list[tuple[str, str | None]] = []
    inside = False
    for event in run.stream:
        if isinstance(event, NodeEvent) and event.invocation["type"] == node_type:
            inside = event.kind == "started"
        elif isinstance(event, ModelLoadEvent) and inside:
            found.append((event.kind, event.submodel_type))
    return found


def _pairs(*submodels: str | None) -> list[tuple[str, str | None]]:
    return [(kind, submodel) for submodel in submodels for kind in ("started", "complete")]


async def test_every_model_request_is_reported_in_invokeais_order(executor: InProcessExecutor, demo: Demo) -> None:
    run = await run_graph(executor, _sd1(demo)[0])

    # InvokeAI 6.8 (golden 101-socket-events-cold): per compel text_encoder then tokenizer; denoise_latents unet
    # then scheduler; l2i vae. Reported on every use, cache hit or not (the second compel's are all hits).
    assert {key for _, key, _ in run.loads()} == {demo.sd15.key}
    assert [(kind, sub) for kind, _, sub in run.loads()] == _pairs(
        "text_encoder", "tokenizer", "text_encoder", "tokenizer", "unet", "scheduler", "vae"
    )
    assert _between(run, "compel") == _pairs("text_encoder", "tokenizer", "text_encoder", "tokenizer")
    assert _between(run, "denoise_latents") == _pairs("unet", "scheduler")
    assert _between(run, "l2i") == _pairs("vae")


async def test_loras_and_a_separate_vae_are_reported_as_whole_models(executor: InProcessExecutor, demo: Demo) -> None:
    run = await run_graph(executor, _sd1(demo, loras=[(identifier(demo.lora), 0.7)], vae=identifier(demo.vae))[0])

    lora = [key for kind, key, sub in run.loads() if sub is None and kind == "started" and key == demo.lora.key]
    assert len(lora) == 3  # both prompts and the denoise
    assert _between(run, "denoise_latents") == _pairs("unet", None, "scheduler")
    assert _between(run, "l2i") == _pairs(None)
    assert ("started", demo.vae.key, None) in run.loads()


async def test_the_jobs_snapshot_is_where_keys_resolve(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    # A model only the snapshot knows (the registry's key for the demo folder); a key the snapshot lacks falls
    # back to the replica's own catalog; a key neither knows fails its node.
    registered = demo.sd15.model_copy(update={"key": "registered-key"})
    from_snapshot = await _pixels(executor, store, _sd1(demo, registered), models=_snapshot(registered))
    from_catalog = await _pixels(executor, store, _sd1(demo))
    from_fallback = await _pixels(executor, store, _sd1(demo), models=_snapshot(registered))

    assert np.array_equal(from_snapshot, from_catalog)
    assert np.array_equal(from_fallback, from_catalog)
    nowhere = demo.sd15.model_copy(update={"key": "nowhere-key"})
    session = session_graph(enqueue_body(_sd1(demo, nowhere)[0], seeds=[1], prompts=["a cat"]))
    with pytest.raises(GenerationFailed) as failure:
        async for _ in executor.execute(graph_job(session, _snapshot(registered))):
            pass
    assert failure.value.error_type == "ModelNotFound" and "nowhere-key" in failure.value.message


async def test_an_embedding_named_in_the_prompt_changes_the_image(
    tmp_path: Path, executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    graph = _sd1(demo)
    ti = _embedding(textual_inversion(tmp_path, name="cat-toy", seed=2), "cat-toy", ModelFamily.SD1)
    other_base = _embedding(
        textual_inversion(tmp_path / "xl", name="cat-toy", fmt="sdxl"), "cat-toy", ModelFamily.SDXL
    ).model_copy(update={"key": "xl-cat-toy"})
    prompt = "a photo of <cat-toy>"

    run = await run_graph(executor, graph[0], seed=11, prompt=prompt, models=_snapshot(demo.sd15, ti))
    with_embedding = pixels(await output_image(store, run, graph[1].output))
    unknown = await _pixels(executor, store, graph, prompt=prompt, models=_snapshot(demo.sd15))
    wrong_base = await _pixels(executor, store, graph, prompt=prompt, models=_snapshot(demo.sd15, other_base))
    by_key = await _pixels(executor, store, graph, prompt=f"a photo of <{ti.key}>", models=_snapshot(demo.sd15, ti))

    assert np.abs(with_embedding - unknown).mean() > 1
    assert np.array_equal(unknown, wrong_base)  # an SDXL embedding is never applied to an SD 1.5 prompt
    assert np.array_equal(with_embedding, by_key)  # `<key>` works as `<name>` does, as in InvokeAI
    # Reported in the positive prompt's node only (the negative prompt names no embedding), after the tokenizer.
    assert [(k, key) for k, key, sub in run.loads() if sub is None] == [("started", ti.key), ("complete", ti.key)]
    assert _between(run, "compel")[:6] == _pairs("text_encoder", "tokenizer", None)


async def test_an_sdxl_embedding_changes_an_sdxl_image(
    tmp_path: Path, executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    graph = sdxl_txt2img(identifier(demo.sdxl), width=SIZE, height=SIZE, steps=STEPS)
    ti = _embedding(textual_inversion(tmp_path, name="xl-toy", fmt="sdxl"), "xl-toy", ModelFamily.SDXL)
    prompt = "a photo of <xl-toy>"

    with_embedding = await _pixels(executor, store, graph, prompt=prompt, models=_snapshot(demo.sdxl, ti))
    unknown = await _pixels(executor, store, graph, prompt=prompt, models=_snapshot(demo.sdxl))

    assert np.abs(with_embedding - unknown).mean() > 1


async def test_a_lora_made_by_peft_changes_pixels_at_weight_one_and_none_at_zero(
    tmp_path: Path, executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    lora = ModelSpec(
        name="peft-lora",
        family=ModelFamily.SD1,
        format=ModelFormat.LYCORIS,
        path=str(peft_lora(tmp_path, base="sd-1", seed=3)),
        type=ModelType.LORA,
    )
    models = _snapshot(demo.sd15, lora)

    plain = await _pixels(executor, store, _sd1(demo), models=models)
    at_one = await _pixels(executor, store, _sd1(demo, loras=[(identifier(lora), 1.0)]), models=models)
    at_zero = await _pixels(executor, store, _sd1(demo, loras=[(identifier(lora), 0.0)]), models=models)

    assert np.abs(plain - at_one).mean() > 1
    assert np.array_equal(plain, at_zero)


async def test_a_budget_too_small_for_anything_still_generates_the_same_pixels(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    graph = _sd1(demo, loras=[(identifier(demo.lora), 0.7)], vae=identifier(demo.vae))
    cache = ModelCache(ram_bytes=1)
    starved = InProcessExecutor(
        runner=GenerationRunner(cache, device="cpu", dtype=torch.float32), catalog=demo.catalog, store=store
    )
    try:
        tight = await _pixels(starved, store, graph)
    finally:
        starved.close()
    roomy = await _pixels(executor, store, graph)

    assert np.array_equal(tight, roomy)
    stats = cache.stats()
    # Each node's models were pinned while it ran, then gave way to the next node's: loading the UNet pushed out
    # the LoRA the prompts had used, so the denoise read it again (7 misses where a roomy cache has 6), and only
    # what the last node (l2i) used is left (the main model's tokenizer and scheduler went with its last weights).
    assert stats["misses"] == 7
    assert list(stats["loaded_model_sizes"]) == ["sd-1:vae:demo-vae-sd15:"]


async def test_plain_requests_resolve_their_model_from_the_snapshot_too(
    executor: InProcessExecutor, demo: Demo
) -> None:
    renamed = demo.sd15.model_copy(update={"name": "only-in-the-registry", "key": "registered-key"})
    request = {"model": "only-in-the-registry", "prompt": "a cat", "width": SIZE, "height": SIZE, "steps": 1, "seed": 1}
    job = ClaimedJob(id=uuid.uuid4(), attempt=1, request=request, models=_snapshot(renamed))

    events = [event async for event in executor.execute(job)]

    result = events[-1]
    assert isinstance(result, ExecutionResult) and len(result.images) == 1
    with pytest.raises(ModelNotFound):
        MappingCatalog(_snapshot(renamed)).resolve(None)
    assert MappingCatalog(_snapshot(renamed, demo.lora)).list() == sorted([renamed, demo.lora], key=lambda s: s.name)
