"""InvokeAI's `create_denoise_mask` and `create_gradient_mask` nodes.

Mask images are read as grayscale: white (255) = keep the input, black (0) = regenerate fully, grey = partial.
The resulting `DenoiseMask.mask` keeps that convention as floats (1 = keep), at latent resolution [1, 1, H/8, W/8].
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image, ImageFilter

from serve_app.domain.errors import InvalidRequest
from serve_app.inference.nodes.images import image_to_tensor
from serve_app.inference.nodes.latents import LATENT_SCALE, DenoiseMask, encode_tensor

CoherenceMode = Literal["Gaussian Blur", "Box Blur", "Staged"]
COHERENCE_MODES: tuple[str, ...] = ("Gaussian Blur", "Box Blur", "Staged")


def create_denoise_mask(
    mask_image: Image.Image, *, vae: Any = None, image: Image.Image | None = None, fp32: bool = False
) -> DenoiseMask:
    """A binary-style inpaint mask from `mask_image`; with `image` and `vae`, also the latents of `image` with the
    regenerated area (mask < 0.5) blacked out, which 9-channel inpainting UNets read."""
    mask = image_to_tensor(mask_image.convert("L"), normalize=False)
    masked_latents = _masked_latents(mask, image, vae, fp32)
    return DenoiseMask(mask=_to_latent_size(mask, image), masked_latents=masked_latents, gradient=False)


def create_gradient_mask(
    mask_image: Image.Image,
    *,
    edge_radius: int = 16,
    coherence_mode: str = "Gaussian Blur",
    minimum_denoise: float = 0.0,
    image: Image.Image | None = None,
    vae: Any = None,
    fp32: bool = False,
    inpaint_model: bool = False,
) -> tuple[DenoiseMask, Image.Image]:
    """A gradient inpaint mask whose soft edge reaches `edge_radius` pixels into the kept area, and the
    `expanded_mask_area` image (white = left fully untouched, black = denoised at all).

    `coherence_mode`: "Gaussian Blur" (σ = radius/2) or "Box Blur" for a gradual edge, "Staged" for one flat
    partial strength across it; `minimum_denoise` (0..1) is the least strength any touched pixel gets. Masked
    latents are computed only for `inpaint_model` UNets (it costs a VAE encode), as InvokeAI."""
    if coherence_mode not in COHERENCE_MODES:
        raise InvalidRequest(
            f"coherence_mode must be one of {', '.join(COHERENCE_MODES)}, got {coherence_mode}", field="coherence_mode"
        )
    if edge_radius < 0:
        raise InvalidRequest(f"edge_radius must not be negative, got {edge_radius}", field="edge_radius")
    if not 0 <= minimum_denoise <= 1:
        raise InvalidRequest(f"minimum_denoise must lie in [0, 1], got {minimum_denoise}", field="minimum_denoise")
    gray = mask_image.convert("L")
    if edge_radius > 0:
        if coherence_mode == "Box Blur":
            blurred = gray.filter(ImageFilter.BoxBlur(edge_radius))
        else:
            blurred = gray.filter(ImageFilter.GaussianBlur(edge_radius / 2))
        blur = image_to_tensor(blurred, normalize=False)
        # Stretch so that the original edge (0.5 after blurring) becomes 0 and the gradient runs into the kept area.
        blur = ((blur - 0.5) * 2).clamp(min=0)
        threshold = 1 - minimum_denoise
        partial = (blur > 0) & (blur < 1) if coherence_mode == "Staged" else (blur > threshold) & (blur < 1)
        blur = torch.where(partial, torch.full_like(blur, threshold), blur)
    else:
        blur = image_to_tensor(gray, normalize=False)
    expanded = (blur[0, 0] >= 1).numpy().astype(np.uint8) * 255
    masked_latents = _masked_latents(blur, image, vae, fp32) if inpaint_model else None
    mask = DenoiseMask(mask=_to_latent_size(blur, image), masked_latents=masked_latents, gradient=True)
    return mask, Image.fromarray(expanded, mode="L")


def _masked_latents(mask: torch.Tensor, image: Image.Image | None, vae: Any, fp32: bool) -> torch.Tensor | None:
    if image is None or vae is None:
        return None
    pixels = image_to_tensor(image.convert("RGB"))
    image_mask = F.interpolate(mask, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
    masked = pixels * torch.where(image_mask < 0.5, 0.0, 1.0)
    return encode_tensor(vae, masked, fp32=fp32)  # type: ignore[no-any-return]


def _to_latent_size(mask: torch.Tensor, image: Image.Image | None) -> torch.Tensor:
    height, width = mask.shape[-2:]
    if image is not None:
        width, height = image.size
    size = (max(height // LATENT_SCALE, 1), max(width // LATENT_SCALE, 1))
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=False).clamp(0, 1)
