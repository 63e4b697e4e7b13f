"""Enfugue's ControlNet keys: checks, the repo a name stands for, the installed model that answers to it, and the
graph nodes a control input becomes."""

from __future__ import annotations

from typing import Any

import pytest

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import ControlInput, GenerationRequest, RegionNode
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.services.enfugue_control import (
    ControlImage,
    check_control,
    control_node,
    controlnet_repo,
    is_controlnet_for,
    used_controlnets,
)
from serve_app.services.generation_graphs import GraphExtras, GraphModel, generation_graph

MAIN = ModelSpec(name="demo", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path="/models/demo")
CANNY = GraphModel(ModelSpec(name="sd-controlnet-canny", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS,
                             path="/models/cn", type=ModelType.CONTROLNET), hash="blake3:cn")  # fmt: skip


class Recorder:
    """The `node`/`edge` callbacks generation_graph hands to its builders."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: list[tuple[str, str, str, str]] = []

    def node(self, node_id: str, node_type: str, **fields: Any) -> str:
        self.nodes[node_id] = {"type": node_type, **fields}
        return node_id

    def edge(self, source: str, source_field: str, destination: str, destination_field: str) -> None:
        self.edges.append((source, source_field, destination, destination_field))


def build(control: ControlInput) -> tuple[Recorder, str]:
    recorder = Recorder()
    result = control_node(recorder.node, recorder.edge, control, CANNY, prefix="r0", width=64, height=64)
    return recorder, result


def test_canny_is_detected_first_and_feeds_the_controlnet_at_the_requested_scale():
    recorder, result = build(ControlInput(controlnet="canny", image="x_control.png", conditioning_scale=0.6))
    assert result == "r0_controlnet"
    assert recorder.nodes["r0_canny"] == {"type": "canny_edge_detection", "image": {"image_name": "x_control.png"}}
    cn = recorder.nodes["r0_controlnet"]
    assert cn["type"] == "controlnet" and cn["control_weight"] == 0.6 and "image" not in cn
    assert cn["control_model"]["key"] == CANNY.spec.key and cn["control_model"]["type"] == "controlnet"
    assert recorder.edges == [("r0_canny", "image", "r0_controlnet", "image")]


@pytest.mark.parametrize(
    ("control", "source_type"),
    [
        (ControlInput(controlnet="tile", image="t.png"), None),  # no detector needed
        (ControlInput(controlnet="tile", image="t.png", invert=True), None),  # invert is for unprocessed images
        (ControlInput(controlnet="depth", image="t.png", process=False), None),
        (ControlInput(controlnet="depth", image="t.png", process=False, invert=True), "img_lerp"),
        (ControlInput(controlnet="canny", image="t.png", process=False), None),
    ],
)
def test_unprocessed_images_go_in_as_sent_or_inverted(control: ControlInput, source_type: str | None):
    recorder, result = build(control)
    sources = [node for node in recorder.nodes if node != result]
    if source_type is None:
        assert sources == [] and recorder.nodes[result]["image"] == {"image_name": "t.png"}
    else:
        [source] = sources
        assert recorder.nodes[source] == {"type": "img_lerp", "image": {"image_name": "t.png"}, "min": 255, "max": 0}
        assert recorder.edges == [(source, "image", result, "image")]


def test_a_detector_this_server_lacks_is_refused_even_in_a_graph():
    with pytest.raises(InvalidRequest, match="cannot run the `pose` detector"):
        build(ControlInput(controlnet="pose", image="t.png"))


@pytest.mark.parametrize(
    ("control", "detail"),
    [
        (ControlImage(image="data:", controlnet=None), "needs a `controlnet`"),
        (ControlImage(image="data:", controlnet="edges"), "Unknown controlnet 'edges'"),
        (ControlImage(image="data:", controlnet="canny", conditioning_scale=-1.5), "between -1 and 2"),
        (ControlImage(image="data:", controlnet="hed"), "send an already processed control image"),
    ],
)
def test_control_keys_are_checked_before_anything_is_decoded(control: ControlImage, detail: str):
    with pytest.raises(InvalidRequest, match=detail):
        check_control(control)


def test_processable_and_unprocessed_controls_pass_the_check():
    for control in (ControlImage(image="data:", controlnet="canny"), ControlImage(image="data:", controlnet="inpaint"),
                    ControlImage(image="data:", controlnet="pose", process=False)):  # fmt: skip
        check_control(control)


def test_repos_come_from_the_settings_else_enfugues_defaults():
    assert controlnet_repo("canny", ModelFamily.SD1, None) == "lllyasviel/sd-controlnet-canny"
    assert controlnet_repo("canny", ModelFamily.SD1, {"canny": "me/canny"}) == "me/canny"
    assert controlnet_repo("canny", ModelFamily.SD1, {"canny": None}) == "lllyasviel/sd-controlnet-canny"
    assert controlnet_repo("depth", ModelFamily.SDXL, {"depth": "me/depth"}) == "diffusers/controlnet-depth-sdxl-1.0"
    assert controlnet_repo("pose", ModelFamily.SDXL, {"pose_xl": "me/pose-xl"}) == "me/pose-xl"
    with pytest.raises(InvalidRequest, match="There is no SDXL ControlNet for `pose`"):
        controlnet_repo("pose", ModelFamily.SDXL, None)


def test_an_installed_controlnet_answers_to_its_source_repo_last_segment_or_name():
    repo = "lllyasviel/sd-controlnet-canny"
    other = GraphModel(CANNY.spec.model_copy(update={"name": "edges-v2"}))
    assert is_controlnet_for(other, repo, "canny", repo, ModelFamily.SD1)
    assert is_controlnet_for(other, f"{repo}:fp16", "canny", repo, ModelFamily.SD1)
    assert is_controlnet_for(CANNY, "/models/cn", "canny", repo, ModelFamily.SD1)  # the repo's last segment
    assert is_controlnet_for(GraphModel(CANNY.spec.model_copy(update={"name": "canny"})), "/x", "canny", repo,
                             ModelFamily.SD1)  # fmt: skip
    assert not is_controlnet_for(other, "/models/cn", "canny", repo, ModelFamily.SD1)
    assert not is_controlnet_for(CANNY, repo, "canny", repo, ModelFamily.SDXL)  # another base
    lora = GraphModel(CANNY.spec.model_copy(update={"type": ModelType.LORA}))
    assert not is_controlnet_for(lora, repo, "canny", repo, ModelFamily.SD1)


def test_used_controlnets_lists_the_single_step_and_region_names_once():
    control = ControlInput(controlnet="canny", image="a.png")
    request = GenerationRequest(control=control, nodes=[
        RegionNode(w=8, h=8, control=ControlInput(controlnet="depth", image="b.png", process=False)),
        RegionNode(w=8, h=8, control=control), RegionNode(w=8, h=8)])  # fmt: skip
    assert used_controlnets(request) == ["canny", "depth"]
    assert used_controlnets(GenerationRequest()) == []


def test_every_sample_is_denoised_under_the_one_controlnet():
    request = GenerationRequest(prompt="a boat", width=64, height=64, steps=3, seed=1, num_images=2,
                                control=ControlInput(controlnet="canny", image="c_control.png"))  # fmt: skip
    graph = generation_graph(request, MAIN, extras=GraphExtras(controlnets={"canny": CANNY}))
    controls = [(edge["source"]["node_id"], edge["destination"]["node_id"]) for edge in graph["edges"]
                if edge["destination"]["field"] == "control"]  # fmt: skip
    assert controls == [("control_controlnet", "denoise_0"), ("control_controlnet", "denoise_1")]
    assert graph["nodes"]["control_canny"]["image"] == {"image_name": "c_control.png"}
    with pytest.raises(InvalidRequest, match="No ControlNet model for `canny`"):
        generation_graph(request, MAIN)
