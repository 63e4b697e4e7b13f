"""Prompt encoding: CLIP skip, long prompts, SDXL's two encoders and micro-conditioning."""

from __future__ import annotations

import pytest
import torch

from serve_app.domain.errors import InvalidRequest
from serve_app.inference.nodes import ModelComponents, encode_prompt, encode_sdxl_prompt
from tests.inference.conftest import TinyModels


def test_sd_conditioning_is_cpu_float32_of_77_tokens(models: TinyModels, components: ModelComponents) -> None:
    (encoder,) = components.text_encoders(models.sd15)

    cond = encode_prompt(encoder, "the cat on a mat")

    assert cond.embeds.shape == (1, 77, 32)
    assert (cond.embeds.dtype, cond.embeds.device.type) == (torch.float32, "cpu")
    assert cond.pooled is None and cond.add_time_ids is None and not cond.is_sdxl


def test_clip_skip_changes_the_conditioning(models: TinyModels, components: ModelComponents) -> None:
    (encoder,) = components.text_encoders(models.sd15)

    last = encode_prompt(encoder, "the cat on a mat")
    skipped = encode_prompt(encoder, "the cat on a mat", skipped_layers=1)

    assert (last.embeds - skipped.embeds).abs().mean() > 1e-3
    # The skipped output is still layer-normalized, as InvokeAI/compel do.
    assert skipped.embeds.mean(-1).abs().max() < 1e-4
    with pytest.raises(InvalidRequest):
        encode_prompt(encoder, "x", skipped_layers=2)


def test_long_prompts_are_chunked_not_truncated(models: TinyModels, components: ModelComponents) -> None:
    (encoder,) = components.text_encoders(models.sd15)
    long = " ".join(["the"] * 100)  # "the" is one token in the tiny vocabulary

    cond = encode_prompt(encoder, long)

    assert cond.embeds.shape == (1, 154, 32)
    # The first chunk is what a 75-token prompt would give.
    assert torch.allclose(cond.embeds[:, :77], encode_prompt(encoder, " ".join(["the"] * 75)).embeds, atol=1e-6)


def test_sdxl_conditioning_shapes_and_time_ids(models: TinyModels, components: ModelComponents) -> None:
    encoders = components.text_encoders(models.sdxl)

    cond = encode_sdxl_prompt(
        encoders,
        "the cat",
        "oil painting",
        original_width=800,
        original_height=600,
        crop_top=8,
        crop_left=16,
        target_width=1024,
        target_height=768,
    )

    assert cond.embeds.shape == (1, 77, 32 + 64)
    assert cond.pooled is not None and cond.pooled.shape == (1, 32)
    assert cond.add_time_ids is not None and cond.add_time_ids.tolist() == [[600, 800, 8, 16, 768, 1024]]
    # The style goes to the second encoder only.
    plain = encode_sdxl_prompt(encoders, "the cat")
    assert torch.equal(plain.embeds[..., :32], cond.embeds[..., :32])
    assert not torch.equal(plain.embeds[..., 32:], cond.embeds[..., 32:])


def test_empty_sdxl_prompts_are_zeros(models: TinyModels, components: ModelComponents) -> None:
    encoders = components.text_encoders(models.sdxl)

    empty = encode_sdxl_prompt(encoders, "")
    half = encode_sdxl_prompt(encoders, "", "a style")

    assert torch.count_nonzero(empty.embeds) == 0 and empty.pooled is not None
    assert torch.count_nonzero(empty.pooled) == 0
    assert torch.count_nonzero(half.embeds[..., :32]) == 0 and torch.count_nonzero(half.embeds[..., 32:]) > 0


def test_sdxl_needs_two_encoders(models: TinyModels, components: ModelComponents) -> None:
    with pytest.raises(InvalidRequest):
        encode_sdxl_prompt(components.text_encoders(models.sd15), "x")


def test_prompts_of_different_lengths_denoise_together(models: TinyModels, components: ModelComponents) -> None:
    from serve_app.inference.nodes import denoise, make_noise

    (encoder,) = components.text_encoders(models.sd15)
    positive = encode_prompt(encoder, " ".join(["cat"] * 100))
    negative = encode_prompt(encoder, "")

    latents = denoise(
        components.unet(models.sd15),
        components.scheduler(models.sd15, "euler"),
        positive,
        negative,
        noise=make_noise(1, 64, 64),
        steps=2,
    )

    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()
