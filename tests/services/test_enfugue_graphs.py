"""Enfugue's image parameters: data-URL decoding, fit/anchor, the engine mask, and the graphs they become."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serve_app.domain.errors import InvalidRequest, PayloadTooLarge
from serve_app.domain.generation import GenerationRequest, enfugue_png_text
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.services.enfugue_images import InputLimits, decode_data_url, engine_mask, fit_image
from serve_app.services.generation_graphs import generation_graph

MAIN = ModelSpec(name="demo", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path="/models/demo")


def png_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def alpha_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    return image.getchannel("A").getbbox()


# --- decoding ---------------------------------------------------------------------------------------------------


def test_a_data_url_decodes_to_its_image():
    image = decode_data_url(png_url(Image.new("RGB", (12, 9), (1, 2, 3))), "image", InputLimits())
    assert image.size == (12, 9)
    assert image.getpixel((0, 0)) == (1, 2, 3)


def test_an_oversized_data_url_is_413_before_decoding():
    url = png_url(Image.new("RGB", (64, 64)))
    with pytest.raises(PayloadTooLarge):
        decode_data_url(url, "image", InputLimits(max_bytes=10))


def test_an_image_over_the_pixel_limit_is_400():
    with pytest.raises(InvalidRequest, match="too many pixels") as caught:
        decode_data_url(png_url(Image.new("RGB", (40, 40))), "image", InputLimits(max_pixels=1000))
    assert not isinstance(caught.value, PayloadTooLarge)


# --- fit and anchor (enfugue-api.md §5.4) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fit", "anchor", "box"),
    [
        (None, None, (0, 0, 20, 10)),  # actual size, top-left
        ("actual", "center-center", (10, 15, 30, 25)),
        ("actual", "bottom-right", (20, 30, 40, 40)),
        ("stretch", "bottom-right", (0, 0, 40, 40)),
        ("contain", "center-center", (0, 10, 40, 30)),
        ("contain", "bottom-left", (0, 20, 40, 40)),
        ("cover", "top-left", (0, 0, 40, 40)),
    ],
)
def test_fit_places_the_image_on_a_transparent_canvas(fit, anchor, box):
    fitted = fit_image(Image.new("RGB", (20, 10), "red"), 40, 40, fit, anchor)
    assert fitted.size == (40, 40) and fitted.mode == "RGBA"
    assert alpha_box(fitted) == box


@pytest.mark.parametrize(("anchor", "kept"), [("center-left", 0), ("center-center", 1), ("center-right", 2)])
def test_cover_keeps_the_anchored_part(anchor, kept):
    # Three 10×10 stripes, red, green, blue: covering a 10×10 canvas keeps one of them.
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    stripes = Image.new("RGB", (30, 10))
    for index, colour in enumerate(colours):
        stripes.paste(colour, (10 * index, 0, 10 * index + 10, 10))
    fitted = fit_image(stripes, 10, 10, "cover", anchor)
    assert fitted.convert("RGB").getpixel((5, 5)) == colours[kept]


def test_an_unknown_fit_is_refused():
    with pytest.raises(InvalidRequest, match="Unknown fit"):
        fit_image(Image.new("RGB", (8, 8)), 8, 8, "squash", None)


# --- the engine's mask (white = keep) ---------------------------------------------------------------------------


def enfugue_mask(left_repaint: bool) -> Image.Image:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :4] = 255 if left_repaint else 0
    mask[:, 4:] = 0 if left_repaint else 255
    return Image.fromarray(mask, "L")


def test_an_enfugue_mask_is_inverted_for_the_engine():
    fitted = fit_image(Image.new("RGB", (8, 8)), 8, 8, None, None)
    mask = engine_mask(fitted, fit_image(enfugue_mask(left_repaint=True), 8, 8, None, None), invert_mask=False)
    assert mask is not None
    assert (mask.getpixel((1, 1)), mask.getpixel((6, 1))) == (0, 255)
    inverted = engine_mask(fitted, fit_image(enfugue_mask(left_repaint=True), 8, 8, None, None), invert_mask=True)
    assert inverted is not None
    assert (inverted.getpixel((1, 1)), inverted.getpixel((6, 1))) == (255, 0)


def test_the_area_a_fit_leaves_empty_is_repainted():
    fitted = fit_image(Image.new("RGB", (8, 4)), 8, 8, "actual", "top-left")
    mask = engine_mask(fitted, None, invert_mask=False)
    assert mask is not None
    assert (mask.getpixel((1, 1)), mask.getpixel((1, 6))) == (255, 0)
    assert engine_mask(fit_image(Image.new("RGB", (8, 8)), 8, 8, None, None), None, invert_mask=False) is None


# --- graphs -------------------------------------------------------------------------------------------------------


def edges_of(graph: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {(e["source"]["node_id"], e["source"]["field"], e["destination"]["node_id"], e["destination"]["field"])
            for e in graph["edges"]}  # fmt: skip


def request(**fields: Any) -> GenerationRequest:
    return GenerationRequest(model="demo", width=64, height=64, seed=10, **fields)


def test_txt2img_has_no_input_nodes():
    graph = generation_graph(request(num_images=2), MAIN)
    assert "input" not in graph["nodes"] and "mask" not in graph["nodes"]
    assert [graph["nodes"][f"noise_{i}"]["seed"] for i in range(2)] == [10, 11]
    assert graph["nodes"]["metadata"]["generation_mode"] == "txt2img"


def test_img2img_denoises_from_the_image_latents():
    graph = generation_graph(request(image="in.png", num_images=2), MAIN)
    nodes, edges = graph["nodes"], edges_of(graph)
    assert nodes["input"]["type"] == "i2l" and nodes["input"]["image"] == {"image_name": "in.png"}
    assert ("model", "vae", "input", "vae") in edges
    for index in range(2):
        assert nodes[f"denoise_{index}"]["denoising_start"] == pytest.approx(0.2)  # Enfugue's strength 0.8
        assert ("input", "latents", f"denoise_{index}", "latents") in edges
    assert nodes["metadata"]["generation_mode"] == "img2img" and nodes["metadata"]["strength"] == 0.8


def test_inpaint_adds_a_denoise_mask_at_full_strength_by_default():
    graph = generation_graph(request(image="in.png", mask="m.png"), MAIN)
    nodes, edges = graph["nodes"], edges_of(graph)
    assert nodes["mask"]["type"] == "create_denoise_mask"
    assert nodes["mask"]["mask"] == {"image_name": "m.png"}
    assert ("mask", "denoise_mask", "denoise_0", "denoise_mask") in edges
    assert nodes["denoise_0"]["denoising_start"] == 0.0
    assert nodes["metadata"]["generation_mode"] == "inpaint"
    assert generation_graph(request(image="in.png", mask="m.png", strength=0.25), MAIN)["nodes"]["denoise_0"][
        "denoising_start"
    ] == pytest.approx(0.75)


def test_strength_zero_saves_the_input_unchanged():
    graph = generation_graph(request(image="in.png", strength=0, num_images=3), MAIN)
    outputs = [graph["nodes"][f"output_{i}"] for i in range(3)]
    assert {node["type"] for node in outputs} == {"save_image"}
    assert all(node["image"] == {"image_name": "in.png"} and not node["is_intermediate"] for node in outputs)
    assert not any(node["type"] in ("denoise_latents", "i2l") for node in graph["nodes"].values())


def test_the_ui_state_stays_out_of_the_graph():
    graph = generation_graph(request(state={"big": "x" * 100}), MAIN)
    assert "state" not in graph["nodes"]["metadata"]["enfugue"]


def test_png_chunks_carry_each_image_seed_the_redacted_plan_and_the_state():
    text = enfugue_png_text(request(image="in.png", mask="m.png", state={"a": 1}).to_json(), 2)
    plan = json.loads(text["EnfugueGenerationData"])
    assert plan["seed"] == 12
    assert plan["image"] == {"width": 64, "height": 64, "mode": "RGB"}
    assert plan["mask"] == {"width": 64, "height": 64, "mode": "L"}
    assert json.loads(text["EnfugueUIState"]) == {"a": 1}
    assert "EnfugueUIState" not in enfugue_png_text(request().to_json(), 0)
