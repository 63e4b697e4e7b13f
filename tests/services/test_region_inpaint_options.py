"""Enfugue's crop_inpaint and scale_to_model_size on canvas inpaint regions: the frame a region diffuses in and the
graphs it makes (the pixels through the real engine: tests/api/enfugue/test_invoke_inpaint_options.py)."""

from __future__ import annotations

from typing import Any

from serve_app.domain.generation import ControlInput, GenerationRequest, RegionNode
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.services.enfugue_inpaint_options import region_frame
from serve_app.services.generation_graphs import GraphExtras, GraphModel, generation_graph

MAIN = ModelSpec(name="demo", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path="/models/demo")
SDXL = ModelSpec(name="demo", family=ModelFamily.SDXL, format=ModelFormat.DIFFUSERS, path="/models/demo-xl")
# A 64 × 64 inpaint region whose mask repaints an 8 × 8 square at (40, 36).
REGION = RegionNode(w=64, h=64, image="i.png", mask="m.png", inpaint=True, mask_box=(40, 36, 8, 8),
                    inpaint_feather=4, crop_inpaint=True, scale_to_model_size=False)  # fmt: skip


def request(region: RegionNode, **values: Any) -> GenerationRequest:
    fields = {"prompt": "a cat", "width": 64, "height": 64, "steps": 3, "seed": 1, "size": 16, **values}
    return GenerationRequest(model="demo", nodes=[region], **fields)


def sources(graph: dict[str, Any], node_id: str) -> dict[str, tuple[str, str]]:
    """{input field: (source node, source field)} of the edges into `node_id`."""
    return {edge["destination"]["field"]: (edge["source"]["node_id"], edge["source"]["field"])
            for edge in graph["edges"] if edge["destination"]["node_id"] == node_id}  # fmt: skip


def of_type(graph: dict[str, Any], node_type: str) -> set[str]:
    return {node_id for node_id, node in graph["nodes"].items() if node["type"] == node_type}


# --- the frame --------------------------------------------------------------------------------------------------


def test_the_crop_is_the_mask_box_grown_by_the_feather_and_at_least_size():
    assert region_frame(REGION, 64, 64, 16) == ((36, 32, 16, 16), None)
    # At least size × size (here 32), centred on the box, clamped to the region.
    assert region_frame(REGION, 64, 64, 32) == ((28, 24, 32, 32), None)
    corner = REGION.model_copy(update={"mask_box": (60, 60, 4, 4)})
    assert region_frame(corner, 64, 64, 16) == ((48, 48, 16, 16), None)


def test_no_crop_when_the_mask_covers_most_of_the_region_or_controls_it_or_is_off():
    whole = (0, 0, 64, 64)
    large = REGION.model_copy(update={"mask_box": (0, 0, 64, 56)})
    controlled = REGION.model_copy(update={"control": ControlInput(controlnet="canny", image="i.png")})
    off = REGION.model_copy(update={"crop_inpaint": False})
    unmasked = REGION.model_copy(update={"mask": None})
    inferred = REGION.model_copy(update={"inpaint": False, "infer": True})
    for region in (large, controlled, off, unmasked, inferred):
        assert region_frame(region, 64, 64, 16) == (whole, None)


def test_the_mask_box_of_a_region_not_a_multiple_of_8_is_brought_to_the_diffusion_size():
    # (w, h) = (60, 60) diffuses at 64 × 64: the box (30, 30, 3, 3) scales outward to (32, 32)-(36, 36), then
    # widens to 8 around its centre 34; unscaled it would centre on 31.
    region = REGION.model_copy(update={"w": 60, "h": 60, "mask_box": (30, 30, 3, 3), "inpaint_feather": 0})
    assert region_frame(region, 64, 64, 8) == ((30, 30, 8, 8), None)
    assert region_frame(region.model_copy(update={"w": 64, "h": 64}), 64, 64, 8) == ((27, 27, 8, 8), None)


def test_scaling_brings_the_diffused_area_up_to_size_at_most_3x():
    scaled = REGION.model_copy(update={"crop_inpaint": False, "scale_to_model_size": True})
    assert region_frame(scaled, 32, 32, 64) == ((0, 0, 32, 32), (64, 64))
    assert region_frame(scaled, 32, 16, 512) == ((0, 0, 32, 16), (96, 48))
    assert region_frame(scaled, 64, 64, 64) == ((0, 0, 64, 64), None)
    # A crop smaller than size scales too: a 64 × 32 region, size 48, crops to 48 × 32 and scales 1.5×.
    both = REGION.model_copy(update={"h": 32, "mask_box": (40, 12, 8, 8), "scale_to_model_size": True})
    assert region_frame(both, 64, 32, 48) == ((16, 0, 48, 32), (72, 48))


# --- the graphs -------------------------------------------------------------------------------------------------


def test_a_cropped_region_diffuses_its_crop_and_pastes_it_back_in_place():
    graph = generation_graph(request(REGION), MAIN)
    nodes = graph["nodes"]
    for crop in ("region_0_image_crop", "region_0_mask_crop"):
        assert nodes[crop]["type"] == "img_crop"
        assert (nodes[crop]["x"], nodes[crop]["y"], nodes[crop]["width"], nodes[crop]["height"]) == (36, 32, 16, 16)
    assert sources(graph, "region_0_image_crop")["image"] == ("region_0_image", "image")
    assert sources(graph, "region_0_mask_crop")["image"] == ("region_0_mask_feathered", "image")
    assert sources(graph, "region_0_latents")["image"] == ("region_0_image_crop", "image")
    assert sources(graph, "region_0_denoise_mask")["image"] == ("region_0_image_crop", "image")
    assert sources(graph, "region_0_denoise_mask")["mask"] == ("region_0_mask_crop", "image")
    assert (nodes["region_0_0_noise"]["width"], nodes["region_0_0_noise"]["height"]) == (16, 16)
    # The crop is pasted onto the whole region image at its place, through the cropped mask, before the canvas.
    pasted = nodes["region_0_0_pasted"]
    assert (pasted["type"], pasted["x"], pasted["y"], pasted["crop"]) == ("img_paste", 36, 32, True)
    assert sources(graph, "region_0_0_pasted") == {"base_image": ("region_0_image", "image"),
                                                   "image": ("region_0_0_decoded", "image"),
                                                   "mask": ("region_0_mask_crop", "image")}  # fmt: skip
    assert sources(graph, "output_0")["image"] == ("region_0_0_pasted", "image")
    assert not of_type(graph, "img_resize")


def test_a_small_region_is_diffused_scaled_up_and_scaled_back():
    small = REGION.model_copy(update={"w": 32, "h": 32, "crop_inpaint": False, "scale_to_model_size": True})
    graph = generation_graph(request(small, size=64), MAIN)
    nodes = graph["nodes"]
    for name in ("image", "mask"):
        resized = nodes[f"region_0_{name}_scaled"]
        assert (resized["type"], resized["width"], resized["height"]) == ("img_resize", 64, 64)
    assert sources(graph, "region_0_mask_scaled")["image"] == ("region_0_mask_feathered", "image")
    assert sources(graph, "region_0_latents")["image"] == ("region_0_image_scaled", "image")
    assert sources(graph, "region_0_denoise_mask")["mask"] == ("region_0_mask_scaled", "image")
    assert (nodes["region_0_0_noise"]["width"], nodes["region_0_0_noise"]["height"]) == (64, 64)
    unscaled = nodes["region_0_0_unscaled"]
    assert (unscaled["type"], unscaled["width"], unscaled["height"]) == ("img_resize", 32, 32)
    assert sources(graph, "region_0_0_unscaled")["image"] == ("region_0_0_decoded", "image")
    # Pasted back at the region's own size through the unscaled mask.
    assert sources(graph, "region_0_0_pasted")["image"] == ("region_0_0_unscaled", "image")
    assert sources(graph, "region_0_0_pasted")["mask"] == ("region_0_mask_feathered", "image")
    # Without `size` the model's native size (512) is the aim: 3× at most.
    native = generation_graph(request(small, size=None), MAIN)["nodes"]
    assert (native["region_0_0_noise"]["width"], native["region_0_0_noise"]["height"]) == (96, 96)


def test_both_off_is_the_graph_without_the_options():
    off = REGION.model_copy(update={"crop_inpaint": False, "scale_to_model_size": False})
    graph = generation_graph(request(off), MAIN)
    # The same graph as with no mask box at all (the metadata records the request, mask box included).
    plain = generation_graph(request(off.model_copy(update={"mask_box": None})), MAIN)
    assert graph["edges"] == plain["edges"]
    assert {**graph["nodes"], "metadata": None} == {**plain["nodes"], "metadata": None}
    assert not of_type(graph, "img_crop") and not of_type(graph, "img_resize")
    assert sources(graph, "region_0_latents")["image"] == ("region_0_image", "image")
    assert (graph["nodes"]["region_0_0_pasted"]["x"], graph["nodes"]["region_0_0_pasted"]["y"]) == (0, 0)


def test_a_cropped_region_is_not_refined_and_a_scaled_one_is_at_its_diffusion_size():
    refiner = GraphModel(ModelSpec(name="refiner", family=ModelFamily.SDXL_REFINER, format=ModelFormat.DIFFUSERS,
                                   path="/models/refiner"))  # fmt: skip
    extras = GraphExtras(refiner=refiner)
    cropped = generation_graph(request(REGION, refiner="refiner", refiner_strength=0.25), SDXL, extras=extras)
    assert "refiner_region_0_0_denoise" not in cropped["nodes"]
    assert sources(cropped, "region_0_0_decoded")["latents"] == ("region_0_0_denoise", "latents")
    small = REGION.model_copy(update={"w": 32, "h": 32, "crop_inpaint": False, "scale_to_model_size": True})
    scaled = generation_graph(request(small, size=64, refiner="refiner", refiner_strength=0.25), SDXL, extras=extras)
    nodes = scaled["nodes"]
    assert sources(scaled, "region_0_0_decoded")["latents"] == ("refiner_region_0_0_denoise", "latents")
    assert (
        nodes["region_0_refiner_positive"]["original_width"],
        nodes["region_0_refiner_positive"]["original_height"],
    ) == (64, 64)
