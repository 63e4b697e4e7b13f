"""Enfugue's crop_inpaint, inpaint_feather and scale_to_model_size: the crop box, the scaled size, the faded mask
and the graphs they make (the pixels through the real engine: tests/api/enfugue/test_invoke_inpaint_options.py)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serve_app.domain.generation import GenerationRequest, RegionNode
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.inference.nodes.mask_fade import expand_mask_with_fade
from serve_app.services.enfugue_inpaint_options import crop_box, mask_box, scaled_size
from serve_app.services.generation_graphs import generation_graph

MAIN = ModelSpec(name="demo", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path="/models/demo")


def request(**values: Any) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a cat", "width": 64, "height": 64, "steps": 3, "seed": 1, **values})


def sources(graph: dict[str, Any], node_id: str) -> dict[str, tuple[str, str]]:
    """{input field: (source node, source field)} of the edges into `node_id`."""
    return {edge["destination"]["field"]: (edge["source"]["node_id"], edge["source"]["field"])
            for edge in graph["edges"] if edge["destination"]["node_id"] == node_id}  # fmt: skip


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- the faded mask ---------------------------------------------------------------------------------------------


def test_the_fade_grows_the_black_area_outward_and_leaves_far_pixels_white():
    mask = np.full((64, 64), 255, dtype=np.uint8)
    mask[:, 32:] = 0  # the right half is repainted
    faded = np.asarray(expand_mask_with_fade(Image.fromarray(mask, "L"), 16))
    assert (faded[:, 32:] == 0).all()  # the repaint area stays black
    assert (faded[:, :15] == 255).all()  # farther than the fade: untouched
    row = faded[10, 15:32].astype(int)
    assert 0 < row[8] < 255  # halfway across the fade: a blend
    assert (np.diff(row) <= 0).all()  # darkening towards the repaint area


def test_a_zero_fade_keeps_the_mask():
    mask = Image.fromarray(np.where(np.arange(64)[None, :] < 40, 255, 0).repeat(8, 0).astype(np.uint8), "L")
    assert np.array_equal(np.asarray(expand_mask_with_fade(mask, 0)), np.asarray(mask))


def test_a_mask_with_nothing_to_repaint_fades_to_white():
    assert np.asarray(expand_mask_with_fade(Image.new("L", (8, 8), 200), 4)).min() == 255


# --- the crop box and the scaled size ---------------------------------------------------------------------------


def test_the_mask_box_is_the_black_area():
    mask = Image.new("L", (64, 48), 255)
    mask.paste(0, (10, 20, 18, 30))
    assert mask_box(png(mask)) == (10, 20, 8, 10)
    assert mask_box(png(Image.new("L", (8, 8), 255))) is None


@pytest.mark.parametrize(
    ("box", "feather", "size", "expected"),
    [
        ((24, 24, 8, 8), 0, 16, (20, 20, 16, 16)),  # grown around its centre to size × size
        ((24, 24, 8, 8), 4, 8, (20, 20, 16, 16)),  # grown by the feather
        ((2, 50, 5, 5), 0, 16, (0, 44, 16, 16)),  # shifted back into the image
        ((10, 10, 9, 3), 0, 8, (10, 7, 16, 8)),  # rounded up to multiples of 8
        ((8, 8, 8, 8), 0, 512, None),  # the size covers the image: no crop
        ((0, 0, 60, 60), 0, 8, None),  # the mask covers more than 75% of the image
    ],
)
def test_the_crop_box(box, feather, size, expected):
    item = request(image="in.png", mask="m.png", mask_box=box, crop_inpaint=True, inpaint_feather=feather)
    assert crop_box(item, size) == expected


def test_no_crop_without_the_flag():
    assert crop_box(request(image="in.png", mask="m.png", mask_box=(8, 8, 8, 8)), 16) is None


@pytest.mark.parametrize(
    ("size", "area", "expected"),
    [((32, 32), 64, (64, 64)), ((32, 16), 64, (96, 48)), ((16, 24), 512, (48, 72)), ((64, 64), 64, None)],
)
def test_the_scaled_size_reaches_the_model_size_by_at_most_three_times(size, area, expected):
    assert scaled_size(size[0], size[1], area) == expected


# --- graphs -----------------------------------------------------------------------------------------------------


def without_metadata(graph: dict[str, Any]) -> dict[str, Any]:
    """The graph less its metadata node (which records the request, options included)."""
    return {**graph, "nodes": {key: node for key, node in graph["nodes"].items() if key != "metadata"}}


def test_options_off_give_todays_graph():
    today = request(image="in.png", mask="m.png", width=32, height=32)
    off = request(image="in.png", mask="m.png", width=32, height=32, size=64, mask_box=(8, 8, 4, 4),
                  crop_inpaint=False, inpaint_feather=0, scale_to_model_size=False)  # fmt: skip
    on = off.model_copy(update={"crop_inpaint": True, "inpaint_feather": 2, "scale_to_model_size": True})
    assert without_metadata(generation_graph(off, MAIN)) == without_metadata(generation_graph(today, MAIN))
    assert without_metadata(generation_graph(on, MAIN)) != without_metadata(generation_graph(today, MAIN))
    nodes = generation_graph(off, MAIN)["nodes"]
    assert {node["type"] for node in nodes.values()}.isdisjoint({"img_crop", "img_resize", "expand_mask_with_fade"})


def test_a_feather_fades_the_denoise_and_the_paste_back_mask():
    graph = generation_graph(request(image="in.png", mask="m.png", inpaint_feather=12), MAIN)
    nodes = graph["nodes"]
    assert nodes["mask_feathered"]["type"] == "expand_mask_with_fade"
    assert nodes["mask_feathered"]["fade_size_px"] == 12
    assert nodes["mask_feathered"]["mask"] == {"image_name": "m.png"}
    assert sources(graph, "mask")["mask"] == ("mask_feathered", "image")
    assert sources(graph, "output_0")["mask"] == ("mask_feathered", "image")
    assert nodes["output_0"]["mask"] is None


def test_a_cropped_inpaint_diffuses_the_box_and_pastes_it_back_in_place():
    item = request(image="in.png", mask="m.png", mask_box=(24, 24, 8, 8), crop_inpaint=True, inpaint_feather=4,
                   size=16, num_images=2)  # fmt: skip
    graph = generation_graph(item, MAIN)
    nodes = graph["nodes"]
    box = {"x": 20, "y": 20, "width": 16, "height": 16}
    assert {key: nodes["input_crop"][key] for key in box} == box
    assert nodes["input_crop"]["image"] == {"image_name": "in.png"}
    assert sources(graph, "mask_crop")["image"] == ("mask_feathered", "image")
    assert sources(graph, "input")["image"] == ("input_crop", "image")
    assert sources(graph, "mask") == {"image": ("input_crop", "image"), "mask": ("mask_crop", "image"),
                                      "vae": ("model", "vae")}  # fmt: skip
    for index in range(2):
        assert (nodes[f"noise_{index}"]["width"], nodes[f"noise_{index}"]["height"]) == (16, 16)
        paste = nodes[f"output_{index}"]
        assert (paste["x"], paste["y"], paste["crop"]) == (20, 20, True)
        assert paste["base_image"] == {"image_name": "in.png"}
        assert sources(graph, f"output_{index}")["mask"] == ("mask_crop", "image")


def test_scaling_diffuses_at_the_model_size_and_resizes_back():
    graph = generation_graph(request(image="in.png", width=32, height=32, size=64, scale_to_model_size=True), MAIN)
    nodes = graph["nodes"]
    assert (nodes["input_scaled"]["type"], nodes["input_scaled"]["width"], nodes["input_scaled"]["height"]) == (
        "img_resize", 64, 64)  # fmt: skip
    assert sources(graph, "input")["image"] == ("input_scaled", "image")
    assert (nodes["noise_0"]["width"], nodes["noise_0"]["height"]) == (64, 64)
    # The decode hands the output id (and the metadata) to the resize back to 32 × 32.
    assert nodes["decoded_0"]["type"] == "l2i" and nodes["decoded_0"]["is_intermediate"]
    output = nodes["output_0"]
    assert (output["type"], output["width"], output["height"], output["is_intermediate"]) == (
        "img_resize", 32, 32, False)  # fmt: skip
    assert sources(graph, "output_0") == {"image": ("decoded_0", "image"), "metadata": ("metadata", "metadata")}
    assert sources(graph, "decoded_0")["latents"] == ("denoise_0", "latents")


def test_a_scaled_inpaint_pastes_the_resized_decode_through_the_unscaled_mask():
    item = request(image="in.png", mask="m.png", width=32, height=32, size=64, scale_to_model_size=True)
    graph = generation_graph(item, MAIN)
    assert sources(graph, "mask")["mask"] == ("mask_scaled", "image")
    assert graph["nodes"]["mask_scaled"]["image"] == {"image_name": "m.png"}
    assert sources(graph, "output_0")["image"] == ("decoded_0_unscaled", "image")
    assert graph["nodes"]["output_0"]["mask"] == {"image_name": "m.png"}


def test_a_large_input_is_not_scaled_and_text_to_image_is_untouched():
    large = request(image="in.png", size=64, scale_to_model_size=True)
    assert "input_scaled" not in generation_graph(large, MAIN)["nodes"]
    plain = request(size=64, scale_to_model_size=True, width=32, height=32)
    unscaled = plain.model_copy(update={"scale_to_model_size": False})
    assert without_metadata(generation_graph(plain, MAIN)) == without_metadata(generation_graph(unscaled, MAIN))


def test_a_region_inpaint_feathers_its_mask_for_the_denoise_and_the_paste():
    region = RegionNode(x=0, y=0, w=64, h=64, image="i.png", mask="m.png", inpaint=True, inpaint_feather=8)
    graph = generation_graph(request(nodes=[region]), MAIN)
    assert graph["nodes"]["region_0_mask_feathered"]["fade_size_px"] == 8
    assert sources(graph, "region_0_mask_feathered")["mask"] == ("region_0_mask_image", "image")
    assert sources(graph, "region_0_denoise_mask")["mask"] == ("region_0_mask_feathered", "image")
    assert sources(graph, "region_0_0_pasted")["mask"] == ("region_0_mask_feathered", "image")
    # Without the feather, or without inpainting, the stored mask is used as it is.
    for plain in (region.model_copy(update={"inpaint_feather": 0}),
                  region.model_copy(update={"inpaint": False, "infer": True})):  # fmt: skip
        assert "region_0_mask_feathered" not in generation_graph(request(nodes=[plain]), MAIN)["nodes"]
