"""Text to image through the node operations: determinism, parity with diffusers, guidance, progress, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from serve_app.domain.errors import InvalidRequest, JobCanceled
from serve_app.domain.models import ModelFamily
from serve_app.inference.nodes import ModelComponents, decode, denoise, make_noise, preview
from tests.inference.conftest import TinyModels
from tests.inference.nodes.conftest import conditionings, generate, generate_latents, pixels


def test_noise_is_seeded_cpu_float32_at_latent_size() -> None:
    noise = make_noise(5, 64, 96)

    assert noise.shape == (1, 4, 12, 8)
    assert (noise.dtype, noise.device.type) == (torch.float32, "cpu")
    assert torch.equal(noise, make_noise(5, 64, 96))
    assert not torch.equal(noise, make_noise(6, 64, 96))
    with pytest.raises(InvalidRequest):
        make_noise(5, 60, 64)


def test_txt2img_is_deterministic_for_a_seed_and_differs_across_seeds(
    models: TinyModels, components: ModelComponents
) -> None:
    first = pixels(generate(components, models.sd15, seed=7))
    again = pixels(generate(components, models.sd15, seed=7))
    other = pixels(generate(components, models.sd15, seed=8))

    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, again)
    assert np.abs(first - other).mean() > 5


def test_our_loop_reproduces_the_diffusers_pipeline(models: TinyModels, components: ModelComponents) -> None:
    # Same noise, prompts, scheduler and guidance: our txt2img must be diffusers' txt2img.
    pipe = components.pipeline(models.sd15)
    noise = make_noise(11, 64, 64)
    ours = decode(pipe.vae, generate_latents(components, models.sd15, seed=11, steps=3, cfg_scale=6.0))

    scheduler = EulerDiscreteScheduler.from_config(components.scheduler(models.sd15, "euler").config)
    reference_pipe = type(pipe)(**{**pipe.components, "scheduler": scheduler}, requires_safety_checker=False)
    reference_pipe.set_progress_bar_config(disable=True)
    reference = reference_pipe(
        "the cat on a mat",
        negative_prompt="",
        height=64,
        width=64,
        num_inference_steps=3,
        guidance_scale=6.0,
        latents=noise.clone(),
    ).images[0]

    assert np.abs(pixels(ours) - pixels(reference)).max() <= 1


def test_sdxl_txt2img_runs_and_matches_the_diffusers_pipeline(models: TinyModels, components: ModelComponents) -> None:
    pipe = components.pipeline(models.sdxl)
    noise = make_noise(3, 64, 64)
    ours = decode(pipe.vae, generate_latents(components, models.sdxl, seed=3, steps=3, cfg_scale=5.0))

    scheduler = EulerDiscreteScheduler.from_config(components.scheduler(models.sdxl, "euler").config)
    reference_pipe = type(pipe)(**{**pipe.components, "scheduler": scheduler}, add_watermarker=False)
    reference_pipe.set_progress_bar_config(disable=True)
    # An empty negative prompt is all zeros in both: InvokeAI's zero_on_empty, and diffusers'
    # force_zeros_for_empty_prompt, which applies when no negative prompt is given at all.
    reference = reference_pipe(
        "the cat on a mat",
        negative_prompt=None,
        height=64,
        width=64,
        num_inference_steps=3,
        guidance_scale=5.0,
        latents=noise.clone(),
    ).images[0]

    assert ours.size == (64, 64)
    assert np.abs(pixels(ours) - pixels(reference)).max() <= 1


def test_a_per_step_cfg_list_equal_to_a_constant_matches_it_and_a_varying_one_differs(
    models: TinyModels, components: ModelComponents
) -> None:
    constant = generate_latents(components, models.sd15, steps=3, cfg_scale=5.0)
    as_list = generate_latents(components, models.sd15, steps=3, cfg_scale=[5.0, 5.0, 5.0])
    varying = generate_latents(components, models.sd15, steps=3, cfg_scale=[5.0, 1.0, 9.0])

    assert torch.equal(constant, as_list)
    assert (constant - varying).abs().mean() > 1e-3
    with pytest.raises(InvalidRequest, match="cfg_scale"):
        generate_latents(components, models.sd15, steps=3, cfg_scale=[5.0, 5.0])


def test_cfg_rescale_changes_the_output(models: TinyModels, components: ModelComponents) -> None:
    plain = generate_latents(components, models.sd15, cfg_scale=7.5)
    rescaled = generate_latents(components, models.sd15, cfg_scale=7.5, cfg_rescale_multiplier=0.7)

    assert (plain - rescaled).abs().mean() > 1e-3


def test_progress_after_every_pass_with_the_latents(models: TinyModels, components: ModelComponents) -> None:
    seen: list[tuple[int, int, tuple[int, ...]]] = []

    generate_latents(components, models.sd15, steps=3, on_step=lambda i, n, x: seen.append((i, n, tuple(x.shape))))

    assert seen == [(1, 3, (1, 4, 8, 8)), (2, 3, (1, 4, 8, 8)), (3, 3, (1, 4, 8, 8))]


def test_should_stop_cancels_within_a_step(models: TinyModels, components: ModelComponents) -> None:
    steps: list[int] = []

    with pytest.raises(JobCanceled):
        generate_latents(
            components,
            models.sd15,
            steps=4,
            on_step=lambda i, n, x: steps.append(i),
            should_stop=lambda: len(steps) >= 1,
        )

    assert steps == [1]


def test_denoise_needs_noise_or_latents(models: TinyModels, components: ModelComponents) -> None:
    positive, negative = conditionings(components, models.sd15)
    with pytest.raises(InvalidRequest):
        denoise(
            components.unet(models.sd15), components.scheduler(models.sd15, "euler"), positive, negative, noise=None
        )


@pytest.mark.parametrize("family", [ModelFamily.SD1, ModelFamily.SDXL])
def test_preview_is_a_latent_resolution_rgb_image(family: ModelFamily) -> None:
    latents = make_noise(1, 64, 96)

    image = preview(latents, family)

    assert (image.size, image.mode) == ((8, 12), "RGB")
    assert np.asarray(image).std() > 0
    # A zero latent maps to mid grey.
    assert np.all(np.abs(np.asarray(preview(torch.zeros(1, 4, 8, 8), family), dtype=int) - 127) <= 1)


# Single-step schedulers only: a multistep one (DPM++ 2M) restarts its history and differs slightly.
@pytest.mark.parametrize("scheduler", ["euler", "ddim", "heun"])
def test_a_split_schedule_continues_exactly_where_it_stopped(
    models: TinyModels, components: ModelComponents, scheduler: str
) -> None:
    # Base until denoising_end, then a second pass from denoising_start on the still-noisy latents (no new noise):
    # InvokeAI's refiner hand-off. With a deterministic scheduler it is the uninterrupted run.
    whole = generate_latents(components, models.sd15, scheduler=scheduler, steps=4)
    first = generate_latents(components, models.sd15, scheduler=scheduler, steps=4, denoising_end=0.5)
    positive, negative = conditionings(components, models.sd15)
    second = denoise(
        components.unet(models.sd15),
        components.scheduler(models.sd15, scheduler),
        positive,
        negative,
        noise=None,
        latents=first,
        steps=4,
        denoising_start=0.5,
    )

    assert not torch.allclose(first, whole, atol=1e-3)
    assert torch.allclose(second, whole, atol=1e-5)
