"""LoRAs through lora_selector -> collect -> lora_collection_loader, and a separate VAE through vae_loader."""

from __future__ import annotations

import numpy as np

from serve_app.inference.executor import InProcessExecutor
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import SIZE, STEPS, Demo, identifier, output_image, pixels, run_graph
from tests.support.invokeai_graphs import sd1_txt2img, sdxl_txt2img


async def _pixels(executor: InProcessExecutor, store: FileObjectStore, demo: Demo, **options: object) -> np.ndarray:
    graph, ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS, **options)  # type: ignore[arg-type]
    return pixels(await output_image(store, await run_graph(executor, graph, seed=11), ids.output))


async def test_a_lora_changes_pixels_at_weight_one_and_none_at_weight_zero(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    lora = identifier(demo.lora)
    plain = await _pixels(executor, store, demo)
    at_one = await _pixels(executor, store, demo, loras=[(lora, 1.0)])
    at_zero = await _pixels(executor, store, demo, loras=[(lora, 0.0)])
    after = await _pixels(executor, store, demo)

    assert np.abs(plain - at_one).mean() > 1
    assert np.array_equal(plain, at_zero)
    assert np.array_equal(plain, after)  # the shared UNet and text encoder got their weights back


async def test_the_lora_loader_adds_the_lora_to_both_handles_once(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    lora = identifier(demo.lora)
    handle = {**lora, "submodel_type": None}
    # The same LoRA collected twice counts once, as in InvokeAI's collection loaders.
    graph, ids = sd1_txt2img(
        identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS, loras=[(lora, 0.5), (lora, 0.9)]
    )
    run = await run_graph(executor, graph)

    loaded = run.output(ids.nodes["lora_collection_loader"])
    assert loaded["type"] == "lora_loader_output"
    assert loaded["unet"]["loras"] == [{"lora": handle, "weight": 0.5}]
    assert loaded["clip"]["loras"] == [{"lora": handle, "weight": 0.5}]
    assert run.output(ids.nodes["lora_selector_2"])["lora"] == {"lora": handle, "weight": 0.9}


async def test_a_separate_vae_decodes_the_same_latents_to_other_pixels(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    vae = identifier(demo.vae)
    graph, ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS, vae=vae)
    run = await run_graph(executor, graph, seed=11)
    with_vae = pixels(await output_image(store, run, ids.output))
    own_vae = await _pixels(executor, store, demo)

    assert run.output(ids.nodes["vae"]) == {
        "type": "vae_output",
        "output_meta": None,
        "vae": {"vae": {**vae, "submodel_type": None}, "seamless_axes": []},
    }
    assert np.abs(with_vae - own_vae).mean() > 2


async def test_sdxl_loras_reach_unet_and_both_text_encoders(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    lora = identifier(demo.lora_sdxl)
    plain_graph, plain_ids = sdxl_txt2img(identifier(demo.sdxl), width=SIZE, height=SIZE, steps=STEPS)
    graph, ids = sdxl_txt2img(identifier(demo.sdxl), width=SIZE, height=SIZE, steps=STEPS, loras=[(lora, 1.0)])
    run = await run_graph(executor, graph, seed=4)
    plain = pixels(await output_image(store, await run_graph(executor, plain_graph, seed=4), plain_ids.output))

    loaded = run.output(ids.nodes["sdxl_lora_collection_loader"])
    assert loaded["type"] == "sdxl_lora_loader_output"
    for handle in ("unet", "clip", "clip2"):
        assert [item["lora"]["key"] for item in loaded[handle]["loras"]] == [lora["key"]]
    assert np.abs(pixels(await output_image(store, run, ids.output)) - plain).mean() > 1
