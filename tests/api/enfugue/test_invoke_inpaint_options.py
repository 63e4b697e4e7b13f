"""`POST /api/invoke` with Enfugue's `inpaint_feather`, `crop_inpaint` and `scale_to_model_size`, through the real
queue and graph engine on the tiny SD1 model (services/enfugue_inpaint_options.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.api.enfugue.test_invoke_images import data_url, gradient, right_half_mask, run
from tests.api.test_enfugue_validation import assert_enfugue_error, assert_nothing_stored

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

# `size` 64: the tiny model's native size (512) would otherwise scale every 64 × 64 input up.
OFF = {"inpaint_feather": 0, "crop_inpaint": False, "scale_to_model_size": False, "size": 64}


def square_mask(left: int, top: int, side: int) -> Image.Image:
    """Enfugue's convention: white = repaint."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[top : top + side, left : left + side] = 255
    return Image.fromarray(mask, "L")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


async def stored_graph(client, repo, **params: Any) -> dict[str, Any]:
    response = await client.post("/api/invoke", json={"prompt": "a lighthouse", "num_inference_steps": 3, "seed": 5,
                                                      **params})  # fmt: skip
    assert response.status_code == 200, response.text
    [job] = await repo.list_jobs()
    graph: dict[str, Any] = job.request["graph"]
    return graph


async def test_a_feathered_inpaint_blends_the_seam_and_keeps_far_pixels(client):
    source = pixels(gradient())
    params = {**OFF, "image": data_url(gradient()), "mask": data_url(right_half_mask())}
    [hard] = await run(client, **params)
    [soft] = await run(client, **{**params, "inpaint_feather": 16})
    [soft_other] = await run(client, **{**params, "inpaint_feather": 16, "seed": 6})
    # Feather 0 is today's hard edge: the whole kept half is the input's.
    assert np.array_equal(hard[:, :32], source[:, :32])
    # Farther than the feather from the repaint area (x >= 32) nothing changes.
    assert np.array_equal(soft[:, :14], source[:, :14])
    assert np.array_equal(soft_other[:, :14], source[:, :14])
    # Across the feather the result moves from the input towards the repainted image: a blend that depends on the
    # seed, less near the far end of the fade than near the repaint area.
    seam = np.abs(soft[:, 18:31] - source[:, 18:31]).mean(axis=(0, 2))
    assert seam[-1] > 5 and seam[-1] > seam[0]
    near, far = (np.abs(soft[:, cols] - soft_other[:, cols]).mean() for cols in (slice(26, 31), slice(16, 20)))
    assert near > far
    assert np.abs(soft[:, 18:31] - hard[:, 18:31]).mean() > 5


async def test_a_cropped_inpaint_changes_nothing_outside_the_crop(client):
    source = pixels(gradient())
    params = {**OFF, "image": data_url(gradient()), "mask": data_url(square_mask(40, 36, 8)), "size": 16,
              "inpaint_feather": 4}  # fmt: skip
    [cropped] = await run(client, **{**params, "crop_inpaint": True})
    [whole] = await run(client, **params)
    # The crop: the mask's box (40, 36, 8, 8) grown by the feather to (36, 32, 16, 16).
    outside = np.ones((64, 64), dtype=bool)
    outside[32:48, 36:52] = False
    assert np.array_equal(cropped[outside], source[outside])
    # The repainted area saw only the crop: a different result than diffusing the whole image.
    assert np.abs(cropped[36:44, 40:48] - whole[36:44, 40:48]).mean() > 5
    assert np.abs(cropped[36:44, 40:48] - source[36:44, 40:48]).mean() > 5


async def test_a_cropped_inpaint_graph_crops_and_pastes_back(idle_client, repo):
    params = {**OFF, "image": data_url(gradient()), "mask": data_url(square_mask(40, 36, 8)), "size": 16}
    graph = await stored_graph(idle_client, repo, **{**params, "crop_inpaint": True})
    nodes = graph["nodes"]
    assert nodes["input_crop"]["type"] == "img_crop"
    assert (nodes["input_crop"]["x"], nodes["input_crop"]["y"], nodes["input_crop"]["width"]) == (36, 32, 16)
    assert (nodes["noise_0"]["width"], nodes["noise_0"]["height"]) == (16, 16)
    assert (nodes["output_0"]["type"], nodes["output_0"]["x"], nodes["output_0"]["y"]) == ("img_paste", 36, 32)


async def test_a_small_input_is_diffused_at_the_model_size_and_returned_at_its_own(client):
    params = {**OFF, "image": data_url(gradient(32, 32)), "strength": 0.5, "width": 32, "height": 32}
    [scaled] = await run(client, **{**params, "scale_to_model_size": True})
    [plain] = await run(client, **params)
    assert scaled.shape == plain.shape == (32, 32, 3)
    assert np.abs(scaled - plain).mean() > 2


async def test_a_scaled_graph_resizes_around_the_diffusion(idle_client, repo):
    params = {**OFF, "image": data_url(gradient(32, 32)), "width": 32, "height": 32, "strength": 0.5}
    graph = await stored_graph(idle_client, repo, **{**params, "scale_to_model_size": True})
    nodes = graph["nodes"]
    assert (nodes["input_scaled"]["type"], nodes["input_scaled"]["width"]) == ("img_resize", 64)
    assert (nodes["noise_0"]["width"], nodes["noise_0"]["height"]) == (64, 64)
    assert (nodes["output_0"]["type"], nodes["output_0"]["width"], nodes["output_0"]["height"]) == (
        "img_resize", 32, 32)  # fmt: skip


async def test_enfugue_defaults_feather_and_scale(idle_client, repo):
    # No option given: feather 32, and the 64 × 64 input is scaled up towards the tiny model's 512 (3× at most).
    graph = await stored_graph(idle_client, repo, image=data_url(gradient()), mask=data_url(right_half_mask()),
                               width=64, height=64)  # fmt: skip
    nodes = graph["nodes"]
    assert nodes["mask_feathered"]["fade_size_px"] == 32
    assert (nodes["noise_0"]["width"], nodes["noise_0"]["height"]) == (192, 192)


async def test_a_region_inpaint_is_feathered_too(client):
    source = pixels(gradient())
    node = {"image": data_url(gradient()), "mask": data_url(right_half_mask()), "inpaint": True}
    [hard] = await run(client, **{**OFF, "nodes": [{**node, "inpaint_feather": 0}]})
    [soft] = await run(client, **{**OFF, "nodes": [{**node, "inpaint_feather": 16}]})
    assert np.array_equal(hard[:, :32], source[:, :32])
    assert np.array_equal(soft[:, :14], source[:, :14])
    assert np.abs(soft[:, 24:31] - source[:, 24:31]).mean() > 5


async def test_a_cropped_region_inpaint_changes_nothing_outside_the_crop(client):
    source = pixels(gradient())
    node = {"image": data_url(gradient()), "mask": data_url(square_mask(40, 36, 8)), "inpaint": True,
            "inpaint_feather": 4, "scale_to_model_size": False}  # fmt: skip
    [cropped] = await run(client, **{**OFF, "size": 16, "nodes": [{**node, "crop_inpaint": True}]})
    [whole] = await run(client, **{**OFF, "size": 16, "nodes": [{**node, "crop_inpaint": False}]})
    # The crop: the mask's box (40, 36, 8, 8), found at submit, grown by the feather to (36, 32, 16, 16).
    outside = np.ones((64, 64), dtype=bool)
    outside[32:48, 36:52] = False
    assert np.array_equal(cropped[outside], source[outside])
    assert np.abs(cropped[36:44, 40:48] - source[36:44, 40:48]).mean() > 5
    assert np.abs(cropped[36:44, 40:48] - whole[36:44, 40:48]).mean() > 5


async def test_a_small_region_inpaint_is_diffused_scaled_and_keeps_its_unmasked_pixels(client):
    source = pixels(gradient(32, 32))
    mask = square_mask(0, 0, 32).crop((0, 0, 32, 32))
    mask.paste(0, (0, 0, 16, 32))  # repaint the right half only
    node = {"image": data_url(gradient(32, 32)), "mask": data_url(mask), "inpaint": True, "crop_inpaint": False,
            "inpaint_feather": 0}  # fmt: skip
    params = {**OFF, "width": 32, "height": 32}
    [scaled] = await run(client, **{**params, "nodes": [{**node, "scale_to_model_size": True}]})
    [plain] = await run(client, **{**params, "nodes": [{**node, "scale_to_model_size": False}]})
    assert scaled.shape == plain.shape == (32, 32, 3)
    # Diffused at 64 × 64 and pasted back at 32 × 32 through the unscaled mask: the kept half is the input's.
    assert np.array_equal(scaled[:, :16], source[:, :16])
    assert np.abs(scaled[:, 16:] - plain[:, 16:]).mean() > 2
    assert np.abs(scaled[:, 16:] - source[:, 16:]).mean() > 5


async def test_region_graphs_crop_and_scale_from_the_stored_mask(idle_client, repo):
    node = {"image": data_url(gradient()), "mask": data_url(square_mask(40, 36, 8)), "inpaint": True,
            "inpaint_feather": 0}  # fmt: skip
    graph = await stored_graph(idle_client, repo, **{**OFF, "size": 32, "nodes": [node]})
    nodes = graph["nodes"]
    crop = nodes["region_0_image_crop"]
    assert (crop["x"], crop["y"], crop["width"], crop["height"]) == (28, 24, 32, 32)
    assert (nodes["region_0_0_noise"]["width"], nodes["region_0_0_noise"]["height"]) == (32, 32)
    assert (nodes["region_0_0_pasted"]["x"], nodes["region_0_0_pasted"]["y"]) == (28, 24)
    assert "region_0_image_scaled" not in nodes


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"inpaint_feather": "wide"}, "inpaint_feather"),
        ({"inpaint_feather": -1}, "inpaint_feather"),
        ({"crop_inpaint": "perhaps"}, "crop_inpaint"),
        ({"scale_to_model_size": [1]}, "scale_to_model_size"),
        ({"nodes": [{"image": data_url(gradient()), "inpaint": True, "inpaint_feather": "wide"}]}, "inpaint_feather"),
        ({"nodes": [{"image": data_url(gradient()), "crop_inpaint": "perhaps"}]}, "crop_inpaint"),
    ],
)
async def test_bad_option_types_are_400(idle_client, repo, params, detail):
    response = await idle_client.post("/api/invoke", json={"prompt": "x", "image": data_url(gradient()), **params})
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(repo)
