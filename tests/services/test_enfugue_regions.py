"""Enfugue's canvas `nodes`: node parsing, canvas coverage, the graphs regions become, and their plan redaction."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import (
    ControlInput,
    GenerationRequest,
    Limits,
    RegionNode,
    UpscalePass,
    enfugue_png_text,
)
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.services.enfugue_images import input_keys
from serve_app.services.enfugue_region_inputs import parse_nodes
from serve_app.services.enfugue_regions import covers_canvas
from serve_app.services.generation_graphs import generation_graph

MAIN = ModelSpec(name="demo", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path="/models/demo")
SDXL = ModelSpec(name="demo-xl", family=ModelFamily.SDXL, format=ModelFormat.DIFFUSERS, path="/models/demo-xl")


def request(nodes: list[RegionNode], **fields: Any) -> GenerationRequest:
    return GenerationRequest(model="demo", width=64, height=64, seed=10, nodes=nodes, **fields)


def edges_of(graph: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {(e["source"]["node_id"], e["source"]["field"], e["destination"]["node_id"], e["destination"]["field"])
            for e in graph["edges"]}  # fmt: skip


def of_type(graph: dict[str, Any], node_type: str) -> dict[str, dict[str, Any]]:
    return {node_id: node for node_id, node in graph["nodes"].items() if node["type"] == node_type}


LEFT = RegionNode(x=0, y=0, w=32, h=64, prompt="a barn")
RIGHT = RegionNode(x=32, y=0, w=32, h=64, prompt="the sea")


# --- parsing ----------------------------------------------------------------------------------------------------


def test_nodes_default_to_the_origin_and_blank_fields_to_their_defaults():
    [body] = parse_nodes([{"w": 16, "h": 8, "prompt": "a cat", "strength": "", "fit": None, "type": "region",
                           "inpaint_controlnet": "x"}])  # fmt: skip
    assert (body.x, body.y, body.w, body.h, body.strength, body.fit) == (0, 0, 16, 8, None, None)


@pytest.mark.parametrize(
    ("node", "detail"),
    [
        ({"w": 8, "h": 8}, "Can't assemble a node from arguments"),
        ({"w": 8, "h": 8, "prompt": "   "}, "Can't assemble"),
        ({"prompt": "a cat", "h": 8}, "`w` and `h` are required"),
        ({"prompt": "a cat", "w": 8, "h": 8, "inpaint": True}, "`inpaint` needs an `image`"),
        ({"prompt": "a cat", "w": 0, "h": 8}, "nodes[0]"),
        ({"prompt": "a cat", "w": 8, "h": 8, "infer": "maybe"}, "infer"),
        ({"image": "data:,", "control": True}, "`control` needs a `controlnet`"),
        ({"image": "data:,", "anchor": "middle"}, "unknown anchor"),
    ],
)
def test_bad_nodes_are_refused_before_any_image_is_decoded(node, detail):
    with pytest.raises(InvalidRequest, match=re.escape(detail)):
        parse_nodes([node])


def test_too_many_nodes_are_refused():
    with pytest.raises(InvalidRequest, match="At most 16 nodes"):
        parse_nodes([{"prompt": "a cat", "w": 8, "h": 8}] * 17)


# --- coverage ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "covered"),
    [
        ([LEFT, RIGHT], True),
        ([LEFT], False),
        ([RegionNode(x=-8, y=-8, w=80, h=80, prompt="all")], True),
        ([LEFT, RegionNode(x=32, y=0, w=32, h=60, prompt="short")], False),
        ([LEFT, RegionNode(x=32, y=0, w=32, h=32, prompt="a"), RegionNode(x=30, y=32, w=40, h=40, prompt="b")], True),
        # An image pasted as it is with gaps (a mask) may leave its area uncovered; with `infer` it is painted.
        ([LEFT, RegionNode(x=32, y=0, w=32, h=64, image="i.png", mask="m.png")], False),
        ([LEFT, RegionNode(x=32, y=0, w=32, h=64, image="i.png")], True),
        ([LEFT, RegionNode(x=32, y=0, w=32, h=64, image="i.png", mask="m.png", infer=True)], True),
    ],
)
def test_coverage(nodes, covered):
    assert covers_canvas(request(nodes)) is covered


# --- graphs -----------------------------------------------------------------------------------------------------


def test_prompt_regions_are_pasted_in_order_onto_a_transparent_canvas_per_image():
    graph = generation_graph(request([LEFT, RIGHT], num_images=2), MAIN)
    nodes, edges = graph["nodes"], edges_of(graph)
    assert "positive" not in nodes and "negative" not in nodes  # regions encode their own prompts
    assert {nodes[f"canvas_{i}"]["type"] for i in range(2)} == {"blank_image"}
    assert nodes["canvas_0"]["color"] == {"r": 0, "g": 0, "b": 0, "a": 0} and nodes["canvas_0"]["mode"] == "RGBA"
    assert [nodes[f"region_{n}_{i}_noise"]["seed"] for i in range(2) for n in range(2)] == [10, 10, 11, 11]
    assert nodes["region_1_0_noise"]["width"] == 32 and nodes["region_1_0_noise"]["height"] == 64
    assert ("canvas_0", "image", "region_0_0_canvas", "base_image") in edges
    assert ("region_0_0_canvas", "image", "output_0", "base_image") in edges
    assert ("region_1_0_decoded", "image", "output_0", "image") in edges
    assert (nodes["output_0"]["x"], nodes["output_0"]["y"], nodes["output_0"]["crop"]) == (32, 0, True)
    assert not nodes["output_0"]["is_intermediate"] and ("metadata", "metadata", "output_0", "metadata") in edges
    # One prompt encoding per region, shared by every image; no outpaint (the canvas is covered).
    assert ("region_0_positive", "conditioning", "region_0_1_denoise", "positive_conditioning") in edges
    assert not any(node_id.startswith("outpaint") for node_id in nodes)


def test_only_regions_with_an_image_take_the_global_prompt():
    image = RegionNode(x=32, y=0, w=32, h=64, prompt="a boat", image="i.png", infer=True)
    graph = generation_graph(request([LEFT, image], prompt="a harbour", negative_prompt="blurry"), MAIN)
    nodes = graph["nodes"]
    assert nodes["region_0_positive"]["prompt"] == "a barn" and nodes["region_0_negative"]["prompt"] == ""
    assert nodes["region_1_positive"]["prompt"] == "a boat, a harbour"
    assert nodes["region_1_negative"]["prompt"] == "blurry"
    assert nodes["region_1_0_denoise"]["denoising_start"] == pytest.approx(0.2)  # Enfugue's img2img strength 0.8


def test_an_uncovered_canvas_with_a_global_prompt_gets_a_final_inpaint():
    graph = generation_graph(request([LEFT], prompt="a landscape", negative_prompt="dark"), MAIN)
    nodes, edges = graph["nodes"], edges_of(graph)
    assert nodes["outpaint_positive"]["prompt"] == "a barn, a landscape"
    assert nodes["outpaint_negative"]["prompt"] == "dark"
    # The canvas's alpha is the mask (white = covered = keep); img_paste lands the result where it is black.
    assert ("region_0_0_canvas", "image", "outpaint_0_covered", "image") in edges
    assert ("outpaint_0_covered", "image", "outpaint_0_mask", "mask") in edges
    assert ("outpaint_0_covered", "image", "output_0", "mask") in edges
    assert ("outpaint_0_decoded", "image", "output_0", "image") in edges
    assert nodes["outpaint_0_denoise"]["denoising_start"] == 0
    assert nodes["region_0_0_canvas"]["is_intermediate"] and not nodes["output_0"]["is_intermediate"]
    no_prompt = generation_graph(request([LEFT]), MAIN)["nodes"]
    assert not any(node_id.startswith("outpaint") for node_id in no_prompt)
    assert not no_prompt["output_0"]["is_intermediate"]


def test_a_region_off_the_8_grid_is_diffused_rounded_up_and_resized_back():
    graph = generation_graph(request([RegionNode(x=3, y=5, w=30, h=20, prompt="a cat")]), MAIN)
    nodes, edges = graph["nodes"], edges_of(graph)
    assert (nodes["region_0_0_noise"]["width"], nodes["region_0_0_noise"]["height"]) == (32, 24)
    assert (nodes["region_0_0_resized"]["width"], nodes["region_0_0_resized"]["height"]) == (30, 20)
    assert ("region_0_0_resized", "image", "output_0", "image") in edges


def test_an_inpaint_region_pastes_its_result_back_through_its_mask():
    inpaint = RegionNode(w=64, h=64, image="i.png", mask="m.png", inpaint=True, strength=0.5)
    graph = generation_graph(request([inpaint]), MAIN)
    nodes, edges = graph["nodes"], edges_of(graph)
    assert nodes["region_0_mask_image"]["image"] == {"image_name": "m.png"}
    assert ("region_0_mask_image", "image", "region_0_denoise_mask", "mask") in edges
    assert ("region_0_denoise_mask", "denoise_mask", "region_0_0_denoise", "denoise_mask") in edges
    assert nodes["region_0_0_denoise"]["denoising_start"] == pytest.approx(0.5)
    assert ("region_0_image", "image", "region_0_0_pasted", "base_image") in edges
    assert ("region_0_mask_image", "image", "region_0_0_pasted", "mask") in edges
    assert ("region_0_0_decoded", "image", "region_0_0_pasted", "image") in edges


def test_an_image_with_gaps_is_pasted_through_its_alpha_or_filled_before_img2img():
    passed = generation_graph(request([RegionNode(w=64, h=64, image="i.png", mask="m.png")]), MAIN)
    alpha = passed["nodes"]["region_0_alpha"]
    assert alpha["type"] == "tomask" and alpha["invert"] is True
    assert ("region_0_alpha", "image", "output_0", "mask") in edges_of(passed)
    assert not of_type(passed, "denoise_latents")
    inferred = generation_graph(request([RegionNode(w=64, h=64, image="i.png", mask="m.png", infer=True)]), MAIN)
    edges = edges_of(inferred)
    assert inferred["nodes"]["region_0_0_gaps_denoise"]["denoising_start"] == 0
    assert ("region_0_0_gaps_pasted", "image", "region_0_0_gaps_latents", "image") in edges
    assert ("region_0_0_gaps_latents", "latents", "region_0_0_denoise", "latents") in edges


def test_sdxl_region_prompts_are_sized_by_their_region():
    graph = generation_graph(request([RegionNode(w=64, h=32, prompt="a cat", prompt_2="oil")]), SDXL)
    positive = graph["nodes"]["region_0_positive"]
    assert positive["type"] == "sdxl_compel_prompt" and positive["style"] == "oil"
    assert (positive["target_width"], positive["target_height"]) == (64, 32)


def test_a_control_region_needs_its_controlnet_model():
    control = ControlInput(controlnet="canny", image="i.png")
    with pytest.raises(InvalidRequest, match="No ControlNet model for `canny`"):
        generation_graph(request([RegionNode(w=64, h=64, image="i.png", control=control)]), MAIN)


def test_upscale_passes_start_from_each_composited_canvas():
    upscale = [UpscalePass(scale=2, method="nearest")]
    graph = generation_graph(request([LEFT, RIGHT], num_images=2, upscale=upscale), MAIN)
    nodes, edges = graph["nodes"], edges_of(graph)
    assert ("region_1_1_canvas", "image", "output_1", "image") in edges
    assert nodes["output_1"]["type"] == "img_resize" and nodes["output_1"]["width"] == 128
    assert nodes["region_1_1_canvas"]["is_intermediate"]


# --- limits, plan, stored inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "detail"),
    [
        (RegionNode(x=64, w=8, h=8, prompt="a"), "lies outside the 64×64 canvas"),
        (RegionNode(x=-8, w=8, h=8, prompt="a"), "lies outside"),
        (RegionNode(w=600, h=8, prompt="a"), "over this server's limits"),
        (RegionNode(w=8, h=8, prompt="a", steps=151), "inference_steps"),
    ],
)
def test_limits_check_each_region(node, detail):
    with pytest.raises(InvalidRequest, match=detail):
        Limits(max_width=512, max_height=512).check(request([node]))


def test_the_plan_redacts_node_images_to_their_size():
    control = ControlInput(controlnet="canny", image="i.png")
    node = RegionNode(x=4, w=32, h=16, image="i.png", mask="m.png", control=control, inpaint=True)
    text = enfugue_png_text(request([node, LEFT]).to_json(), 1)
    plan = json.loads(text["EnfugueGenerationData"])
    assert plan["seed"] == 11
    first, second = plan["nodes"]
    assert first["image"] == {"width": 32, "height": 16, "mode": "RGB"}
    assert first["mask"] == {"width": 32, "height": 16, "mode": "L"}
    assert first["control"]["image"] == {"width": 32, "height": 16, "mode": "RGB"}
    assert first["control"]["controlnet"] == "canny" and first["x"] == 4 and first["inpaint"] is True
    assert second["image"] is None and second["prompt"] == "a barn"


def test_stored_node_images_are_deleted_with_the_job():
    nodes = [RegionNode(w=8, h=8, image="a_node0_input.png", mask="a_node0_mask.png"), LEFT,
             RegionNode(w=8, h=8, image="a_node2_input.png")]  # fmt: skip
    keys = input_keys({"enfugue": request(nodes).to_json()})
    assert sorted(keys) == sorted(f"images/{name}" for name in ("a_node0_input.png", "a_node0_mask.png",
                                                                "a_node2_input.png"))  # fmt: skip


# --- the single-step inpaint's paste-back -----------------------------------------------------------------------


def test_a_single_step_inpaint_saves_the_decoded_image_pasted_onto_its_input():
    single = GenerationRequest(model="demo", width=64, height=64, seed=10, image="in.png", mask="m.png")
    graph = generation_graph(single, MAIN)
    nodes, edges = graph["nodes"], edges_of(graph)
    output = nodes["output_0"]
    assert output["type"] == "img_paste" and not output["is_intermediate"]
    assert output["base_image"] == {"image_name": "in.png"} and output["mask"] == {"image_name": "m.png"}
    assert ("decoded_0", "image", "output_0", "image") in edges and nodes["decoded_0"]["is_intermediate"]
    assert ("metadata", "metadata", "output_0", "metadata") in edges
    upscaled = generation_graph(single.model_copy(update={"upscale": [UpscalePass(scale=2, method="nearest")]}), MAIN)
    assert ("pasted_0", "image", "output_0", "image") in edges_of(upscaled)
    assert upscaled["nodes"]["pasted_0"]["is_intermediate"]
    # Without a mask nothing is pasted: the decoded image is the output.
    assert generation_graph(single.model_copy(update={"mask": None}), MAIN)["nodes"]["output_0"]["type"] == "l2i"
