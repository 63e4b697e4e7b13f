"""Image to image and inpainting: denoising_start, VAE encode/decode, denoise and gradient masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.domain.errors import InvalidRequest
from serve_app.inference.nodes import (
    DenoiseMask,
    ModelComponents,
    create_denoise_mask,
    create_gradient_mask,
    decode,
    encode,
)
from tests.inference.conftest import TinyModels
from tests.inference.nodes.conftest import generate_latents, pixels


def _init_image() -> Image.Image:
    # Smooth, structured content the tiny VAE round-trips reasonably.
    y, x = np.mgrid[0:64, 0:64]
    array = np.stack([x * 4, y * 4, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


def _half_mask(keep_left: bool = True) -> Image.Image:
    # White = keep: the left half is kept, the right half regenerated.
    array = np.zeros((64, 64), dtype=np.uint8)
    if keep_left:
        array[:, :32] = 255
    else:
        array[:, 32:] = 255
    return Image.fromarray(array, mode="L")


def test_encode_then_decode_keeps_size_and_is_deterministic(models: TinyModels, components: ModelComponents) -> None:
    vae = components.vae(models.sd15)
    image = _init_image()

    latents = encode(vae, image)

    assert latents.shape == (1, 4, 8, 8)
    assert (latents.dtype, latents.device.type) == (torch.float32, "cpu")
    assert torch.equal(latents, encode(vae, image))
    assert decode(vae, latents).size == (64, 64)
    # Sizes not a multiple of 8 are cropped down, as InvokeAI does.
    assert encode(vae, image.resize((70, 66))).shape == (1, 4, 8, 8)


# The tiny random VAE mixes the whole image (its mid block has attention), so closeness is judged on latents.
def test_img2img_at_half_strength_stays_closer_to_the_init_image(
    models: TinyModels, components: ModelComponents
) -> None:
    init = encode(components.vae(models.sd15), _init_image())

    half = generate_latents(components, models.sd15, latents=init, denoising_start=0.5, steps=4)
    full = generate_latents(components, models.sd15, latents=init, denoising_start=0.0, steps=4)

    assert (half - init).abs().mean() < 0.5 * (full - init).abs().mean()
    assert (half - init).abs().mean() > 0


def test_denoising_start_one_returns_the_input_and_end_cuts_the_schedule(
    models: TinyModels, components: ModelComponents
) -> None:
    init = encode(components.vae(models.sd15), _init_image())
    passes: list[int] = []

    untouched = generate_latents(components, models.sd15, latents=init, denoising_start=1.0, steps=4)
    generate_latents(components, models.sd15, steps=4, denoising_end=0.5, on_step=lambda i, n, x: passes.append(n))

    assert torch.equal(untouched, init)
    assert set(passes) == {2}


def test_create_denoise_mask_reads_white_as_keep_at_latent_size(
    models: TinyModels, components: ModelComponents
) -> None:
    mask = create_denoise_mask(_half_mask(), vae=components.vae(models.sd15), image=_init_image())

    assert mask.mask.shape == (1, 1, 8, 8)
    assert torch.all(mask.mask[..., :3] == 1) and torch.all(mask.mask[..., 5:] == 0)
    assert mask.masked_latents is not None and mask.masked_latents.shape == (1, 4, 8, 8)
    assert not mask.gradient
    assert create_denoise_mask(_half_mask()).masked_latents is None


@pytest.mark.parametrize("gradient", [False, True])
def test_inpaint_keeps_the_unmasked_region(models: TinyModels, components: ModelComponents, gradient: bool) -> None:
    vae = components.vae(models.sd15)
    init = encode(vae, _init_image())
    if gradient:
        mask, _ = create_gradient_mask(_half_mask(), edge_radius=0)
    else:
        mask = create_denoise_mask(_half_mask())

    result = generate_latents(components, models.sd15, latents=init, denoise_mask=mask, steps=4)

    # Latent columns 0-3 are the kept left half: exactly the input; the right half is regenerated.
    assert torch.equal(result[..., :4], init[..., :4])
    assert (result - init)[..., 4:].abs().mean() > 0.5
    # In pixels the kept half stays much closer to the input than the regenerated half.
    difference = np.abs(pixels(decode(vae, result)) - pixels(decode(vae, init)))
    assert difference[:, :16].mean() < 0.5 * difference[:, 48:].mean()


def test_the_inverted_mask_keeps_the_other_side(models: TinyModels, components: ModelComponents) -> None:
    init = encode(components.vae(models.sd15), _init_image())

    result = generate_latents(
        components, models.sd15, latents=init, denoise_mask=create_denoise_mask(_half_mask(False))
    )

    assert torch.equal(result[..., 4:], init[..., 4:])
    assert (result - init)[..., :4].abs().mean() > 0.5


def test_a_partial_gradient_value_is_denoised_less_than_a_zero(models: TinyModels, components: ModelComponents) -> None:
    init = encode(components.vae(models.sd15), _init_image())
    values = torch.zeros(1, 1, 8, 8)
    values[..., :4] = 0.6  # denoised at strength 0.4: held to the input for the first ~60% of the schedule
    mask = DenoiseMask(mask=values, gradient=True)

    result = generate_latents(components, models.sd15, latents=init, denoise_mask=mask, steps=4)

    change = (result - init).abs()
    assert 0 < change[..., :4].mean() < 0.5 * change[..., 4:].mean()


def test_gradient_mask_widens_the_regenerated_area_into_the_kept_one() -> None:
    mask, expanded = create_gradient_mask(_half_mask(), edge_radius=16, coherence_mode="Gaussian Blur")

    assert mask.gradient and mask.mask.shape == (1, 1, 8, 8)
    values = mask.mask[0, 0, 0]
    # Regenerated side 0, a partial band inside the kept side, fully kept far from the edge.
    assert values[-1] == 0 and values[0] == 1 and 0 < values[3] < 1
    area = np.asarray(expanded)
    assert expanded.size == (64, 64) and expanded.mode == "L"
    assert area[:, :8].min() == 255 and area[:, 20:].max() == 0


def test_gradient_mask_modes_and_minimum_denoise() -> None:
    staged, _ = create_gradient_mask(_half_mask(), edge_radius=16, coherence_mode="Staged", minimum_denoise=0.25)
    boxed, _ = create_gradient_mask(_half_mask(), edge_radius=16, coherence_mode="Box Blur", minimum_denoise=0.25)

    # Staged: one flat strength across the band (bilinear resizing to latent size blends it with the kept side).
    partial = staged.mask[(staged.mask > 0) & (staged.mask < 1)]
    assert partial.numel() > 0 and torch.all((partial >= 0.75) & (partial < 1))
    assert torch.isclose(partial.min(), torch.tensor(0.75))
    # Every touched value is denoised at least by `minimum_denoise`.
    assert torch.all((boxed.mask <= 0.75) | (boxed.mask == 1))
    with pytest.raises(InvalidRequest):
        create_gradient_mask(_half_mask(), coherence_mode="Sharpen")
