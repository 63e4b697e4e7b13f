"""Canvas image-to-image and inpaint graphs on an uploaded init image (and mask)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from serve_app.domain.images import ImageCategory
from serve_app.inference.executor import InProcessExecutor
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import (
    SIZE,
    STEPS,
    Demo,
    gradient_image,
    identifier,
    output_image,
    pixels,
    run_graph,
    stored_png,
    upload,
)
from tests.support.invokeai_graphs import sd1_img2img, sd1_inpaint, sd1_txt2img


async def _img2img(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore, init: str, strength: float
) -> np.ndarray:
    graph, ids = sd1_img2img(identifier(demo.sd15), init, strength, width=SIZE, height=SIZE, steps=STEPS)
    run = await run_graph(executor, graph, seed=3)
    latents = run.output(ids.nodes["i2l"])
    assert latents["type"] == "latents_output" and (latents["width"], latents["height"]) == (SIZE, SIZE)
    return pixels(await output_image(store, run, ids.output))


async def test_img2img_strength_moves_the_result_away_from_the_init_image(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    init = await upload(store, gradient_image())
    # Strength 0 runs no step: the init image through the VAE and back (what every strength starts from).
    round_trip = await _img2img(executor, demo, store, init, 0.0)
    light = await _img2img(executor, demo, store, init, 0.25)
    heavy = await _img2img(executor, demo, store, init, 1.0)
    txt2img, ids = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=STEPS)
    from_noise = pixels(await output_image(store, await run_graph(executor, txt2img, seed=3), ids.output))

    light_distance = np.abs(light - round_trip).mean()
    assert 0 < light_distance < np.abs(heavy - round_trip).mean()
    assert np.abs(light - from_noise).mean() > 1  # the init image, not only the noise, shaped the light result


async def test_inpaint_keeps_the_unmasked_region_and_regenerates_the_masked_one(
    executor: InProcessExecutor, demo: Demo, store: FileObjectStore
) -> None:
    init = await upload(store, gradient_image())
    mask_array = np.full((SIZE, SIZE), 255, dtype=np.uint8)
    mask_array[:, SIZE // 2 :] = 0  # white keeps (left), black regenerates (right)
    mask = await upload(store, Image.fromarray(mask_array, mode="L"))
    round_trip = await _img2img(executor, demo, store, init, 0.0)

    graph, ids = sd1_inpaint(identifier(demo.sd15), init, mask, width=SIZE, height=SIZE, steps=STEPS)
    run = await run_graph(executor, graph, seed=3)
    result = pixels(await output_image(store, run, ids.output))

    # The kept latents come back exactly, but the tiny VAE's mid-block attention spreads every latent over the
    # whole image, so in pixels the kept region only changes clearly less (about half) than the regenerated one.
    change = np.abs(result - round_trip).mean(axis=(0, 2))  # per column
    kept, regenerated = change[: SIZE // 4].mean(), change[SIZE // 2 :].mean()
    assert regenerated > 1.4 * kept, (kept, regenerated)

    # The gradient mask and its expanded area: an intermediate mask-category image, white only where untouched.
    mask_output = run.output(ids.nodes["create_gradient_mask"])
    assert mask_output["type"] == "gradient_mask_output" and mask_output["denoise_mask"]["gradient"] is True
    (complete,) = run.of(ids.nodes["create_gradient_mask"], "complete")
    (expanded,) = complete.images
    assert expanded.name == mask_output["expanded_mask_area"]["image_name"]
    assert expanded.is_intermediate and expanded.category is ImageCategory.MASK
    area, _ = await stored_png(store, expanded.name)
    area_array = np.asarray(area.convert("L"))
    assert (area_array[:, : SIZE // 8] == 255).all() and (area_array[:, SIZE // 2 :] == 0).all()
