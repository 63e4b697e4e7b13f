"""Enfugue's upscale keys as passes, the limits on the upscaled size, and the graph nodes they become."""

from __future__ import annotations

from typing import Any

import pytest

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import DEFAULT_UPSCALE_DIFFUSION_PROMPT, GenerationRequest, Limits, UpscalePass
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.services.enfugue_upscale import UpscaleSettings, pass_scales
from serve_app.services.generation_graphs import generation_graph

MAIN = ModelSpec(name="demo", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path="/models/demo")
XL = ModelSpec(name="xl", family=ModelFamily.SDXL, format=ModelFormat.DIFFUSERS, path="/models/xl")


def request(**values: Any) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "p", "width": 64, "height": 64, "steps": 3, "seed": 7, **values})


def sources_of(graph: dict[str, Any], node_id: str, field: str) -> list[str]:
    return [edge["source"]["node_id"] for edge in graph["edges"]
            if edge["destination"] == {"node_id": node_id, "field": field}]  # fmt: skip


@pytest.mark.parametrize(
    ("outscale", "iterative", "scales"),
    [(1, False, []), (1, True, []), (4, False, [4]), (4, True, [2, 4]), (8, True, [2, 4, 8]), (3, True, [2, 3])],
)
def test_pass_scales(outscale, iterative, scales):
    assert pass_scales(outscale, iterative) == scales


def test_a_method_list_gives_one_per_pass_and_repeats_its_last():
    passes = UpscaleSettings(upscale=["nearest", "bicubic"], outscale=8, iterative=True).passes()
    assert [(p.scale, p.method, p.steps) for p in passes] == [(2, "nearest", None), (4, "bicubic", None),
                                                              (8, "bicubic", None)]  # fmt: skip


def test_no_method_or_outscale_one_means_no_upscale():
    assert UpscaleSettings(outscale=4).passes() == []
    assert UpscaleSettings(upscale="lanczos").passes() == []


def test_diffusion_defaults_are_enfugues_and_lists_go_per_pass():
    [first, second] = UpscaleSettings(upscale="lanczos", outscale=4, iterative=True, diffusion=True,
                                      strength=[0.3, 0.5], prompt="sharp").passes()  # fmt: skip
    assert (first.steps, first.guidance_scale, first.strength, first.prompt) == (100, 12.0, 0.3, "sharp")
    assert (second.strength, second.negative_prompt) == (0.5, "")
    [plain] = UpscaleSettings(upscale="lanczos", outscale=2, diffusion=True).passes()
    assert plain.prompt == DEFAULT_UPSCALE_DIFFUSION_PROMPT


def test_gfpgan_is_refused_and_esrgan_passes_name_their_method():
    with pytest.raises(InvalidRequest, match="No upscaling model installed for gfpgan: this server does not run"):
        UpscaleSettings(upscale=["lanczos", "gfpgan"], outscale=2).passes()
    # Whether a model is installed for them is the resolver's question (services/enfugue_esrgan.py).
    passes = UpscaleSettings(upscale=["esrgan", "esrganime"], outscale=4, iterative=True).passes()
    assert [(step.scale, step.method) for step in passes] == [(2, "esrgan"), (4, "esrganime")]


def test_an_unknown_method_is_refused():
    with pytest.raises(InvalidRequest, match="Unknown upscale method 'sharpen'"):
        UpscaleSettings(upscale="sharpen", outscale=2).passes()


def test_the_upscaled_size_must_fit_the_limits():
    limits = Limits(max_width=256, max_height=256, max_pixels=256 * 256)
    limits.check(request(upscale=[UpscalePass(scale=4, method="lanczos")]))
    with pytest.raises(InvalidRequest, match="upscaled size 512×512"):
        limits.check(request(upscale=[UpscalePass(scale=8, method="lanczos")]))


def test_upscale_steps_are_capped_at_the_servers_maximum():
    capped = Limits(max_steps=20).capped(request(upscale=[UpscalePass(scale=2, method="nearest", steps=100)]))
    assert capped.upscale[0].steps == 20
    Limits(max_steps=20).check(capped)


def test_a_plain_upscale_saves_the_resized_image_only():
    graph = generation_graph(request(num_images=2, upscale=UpscaleSettings(upscale="lanczos", outscale=2).passes()),
                             MAIN)  # fmt: skip
    nodes = graph["nodes"]
    for index in range(2):
        output = nodes[f"output_{index}"]
        assert (output["type"], output["width"], output["height"]) == ("img_resize", 128, 128)
        assert output["resample_mode"] == "lanczos" and output["is_intermediate"] is False
        assert nodes[f"decoded_{index}"]["is_intermediate"] is True
        assert sources_of(graph, f"output_{index}", "image") == [f"decoded_{index}"]
        assert sources_of(graph, f"output_{index}", "metadata") == ["metadata"]
        assert sources_of(graph, f"decoded_{index}", "metadata") == []
    saved = [node_id for node_id, node in nodes.items() if not node["is_intermediate"]]
    assert sorted(saved) == ["output_0", "output_1"]


def test_iterative_diffusion_chains_resize_and_img2img_per_pass():
    passes = UpscaleSettings(upscale="bicubic", outscale=4, iterative=True, diffusion=True, steps=[10, 20],
                             strength=0.25).passes()  # fmt: skip
    graph = generation_graph(request(upscale=passes), MAIN)
    nodes = graph["nodes"]
    assert nodes["upscale_0_0"]["width"] == 128 and nodes["upscale_0_1"]["width"] == 256
    assert sources_of(graph, "upscale_0_0", "image") == ["decoded_0"]
    assert sources_of(graph, "upscale_i2l_0_0", "image") == ["upscale_0_0"]
    assert sources_of(graph, "upscale_0_1", "image") == ["upscale_l2i_0_0"]
    denoise = nodes["upscale_denoise_0_1"]
    assert (denoise["steps"], denoise["denoising_start"]) == (20, 0.75)
    assert nodes["upscale_noise_0_1"]["width"] == 256
    assert nodes["upscale_positive_0"]["prompt"] == DEFAULT_UPSCALE_DIFFUSION_PROMPT
    assert sources_of(graph, "output_0", "latents") == ["upscale_denoise_0_1"]
    assert nodes["output_0"]["is_intermediate"] is False
    assert sources_of(graph, "output_0", "metadata") == ["metadata"]


def test_sdxl_upscale_prompts_use_both_encoders():
    passes = UpscaleSettings(upscale="nearest", outscale=2, diffusion=True, prompt_2="style").passes()
    graph = generation_graph(request(upscale=passes), XL)
    prompt = graph["nodes"]["upscale_positive_0"]
    assert (prompt["type"], prompt["style"], prompt["target_width"]) == ("sdxl_compel_prompt", "style", 128)
    assert sources_of(graph, "upscale_positive_0", "clip2") == ["model"]


def test_a_pass_through_image_is_upscaled_too():
    graph = generation_graph(request(image="in.png", strength=0, upscale=UpscaleSettings(
        upscale="nearest", outscale=2).passes()), MAIN)  # fmt: skip
    assert graph["nodes"]["input_0"]["type"] == "image"
    assert sources_of(graph, "output_0", "image") == ["input_0"]
