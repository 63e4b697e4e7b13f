"""Node schemas: InvokeAI's names, defaults and constraints, and the registry."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from serve_app.domain.graph.fields import ImageField
from serve_app.domain.graph.invocations import INVOCATIONS, OUTPUTS, AnyInvocation, output_class, writes_images
from serve_app.domain.graph.latent_nodes import DenoiseLatentsInvocation, NoiseInvocation
from serve_app.domain.graph.outputs import ImageOutput

NODE = TypeAdapter(AnyInvocation)


def parse(node: dict[str, Any]) -> Any:
    return NODE.validate_python({"id": "n", **node})


def test_every_brief_node_type_is_registered_with_an_output() -> None:
    expected = {
        "integer", "float", "string", "boolean", "rand_int", "collect", "iterate", "main_model_loader",
        "sdxl_model_loader", "vae_loader", "clip_skip", "compel", "sdxl_compel_prompt", "noise", "denoise_latents",
        "l2i", "i2l", "img_resize", "create_denoise_mask", "create_gradient_mask", "lora_selector",
        "lora_collection_loader", "sdxl_lora_collection_loader", "lora_loader", "sdxl_lora_loader", "core_metadata",
        "save_image", "image",
    }  # fmt: skip
    assert expected <= set(INVOCATIONS)
    for node_type in INVOCATIONS:
        assert output_class(node_type) in OUTPUTS.values()
        assert parse({"type": node_type}).type == node_type  # everything optional at parse time


def test_unknown_type_is_a_union_tag_error() -> None:
    with pytest.raises(ValidationError) as caught:
        parse({"type": "not_a_real_node"})
    assert caught.value.errors()[0]["type"] == "union_tag_invalid"


def test_unknown_input_is_rejected_except_on_core_metadata() -> None:
    with pytest.raises(ValidationError) as caught:
        parse({"type": "noise", "sed": 1})
    assert caught.value.errors()[0]["type"] == "extra_forbidden"
    metadata = parse({"type": "core_metadata", "custom_key": [1, 2]})
    assert metadata.model_dump()["custom_key"] == [1, 2]


def test_denoise_latents_defaults_and_bounds() -> None:
    node = parse({"type": "denoise_latents"})
    assert isinstance(node, DenoiseLatentsInvocation)
    assert (node.steps, node.cfg_scale, node.scheduler) == (10, 7.5, "euler")
    assert (node.denoising_start, node.denoising_end, node.cfg_rescale_multiplier) == (0.0, 1.0, 0.0)
    assert parse({"type": "denoise_latents", "cfg_scale": [3, 4.5]}).cfg_scale == [3.0, 4.5]
    assert parse({"type": "denoise_latents", "scheduler": "dpmpp_2m_sde_k"}).scheduler == "dpmpp_2m_sde_k"
    for bad in (
        {"cfg_rescale_multiplier": 1},
        {"denoising_start": 1.5},
        {"denoising_end": -0.1},
        {"steps": 0},
        {"scheduler": "not_a_scheduler"},
        {"cfg_scale": [7.0, 0.5]},
    ):
        with pytest.raises(ValidationError):
            parse({"type": "denoise_latents", **bad})


def test_noise_sizes_are_latent_aligned_and_seed_is_uint32() -> None:
    node = parse({"type": "noise"})
    assert isinstance(node, NoiseInvocation)
    assert (node.seed, node.width, node.height, node.use_cpu) == (0, 512, 512, True)
    for bad in ({"width": 100}, {"height": 0}, {"seed": -1}, {"seed": 2**32}):
        with pytest.raises(ValidationError):
            parse({"type": "noise", **bad})


def test_input_markers() -> None:
    l2i = INVOCATIONS["l2i"]
    assert l2i.input_spec("latents") is not None and l2i.input_spec("latents").kind == "connection"  # type: ignore[union-attr]
    assert l2i.input_spec("latents").required  # type: ignore[union-attr]
    assert not l2i.input_spec("fp32").required  # type: ignore[union-attr]
    assert l2i.input_spec("board").kind == "direct"  # type: ignore[union-attr]
    assert l2i.input_spec("id") is None and l2i.input_spec("type") is None
    assert INVOCATIONS["main_model_loader"].input_spec("model").required  # type: ignore[union-attr]


def test_image_writers_take_board_and_metadata() -> None:
    for node_type in ("l2i", "img_resize", "save_image", "image"):
        assert writes_images(node_type)
        node = parse({"type": node_type, "board": {"board_id": "b"}, "metadata": {"a": 1}})
        assert node.board.board_id == "b"
    assert not writes_images("i2l")


def test_uncached_nodes_match_invokeai() -> None:
    assert parse({"type": "rand_int"}).use_cache is False
    assert parse({"type": "save_image"}).use_cache is False
    assert parse({"type": "integer"}).use_cache is True


def test_image_output_serializes_like_invokeai_events() -> None:
    output = ImageOutput(image=ImageField(image_name="x.png"), width=512, height=512)
    assert output.model_dump(mode="json") == {
        "type": "image_output",
        "output_meta": None,
        "image": {"image_name": "x.png"},
        "width": 512,
        "height": 512,
    }


def test_numbers_sent_to_string_inputs_become_strings() -> None:
    assert parse({"type": "string", "value": 5}).value == "5"
