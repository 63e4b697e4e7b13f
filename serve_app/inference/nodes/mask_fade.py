"""`expand_mask_with_fade` as InvokeAI computes it: a distance transform from the black area, eased with a
sigmoid rescaled to run exactly from 0 (at the black edge) to 1 (at `fade_size_px`)."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def expand_mask_with_fade(mask: Image.Image, fade_size_px: int, threshold: int = 0) -> Image.Image:
    """`mask` (L; black = generated) with its black area faded out over `fade_size_px` pixels; pixels at least
    that far from black stay white, black stays black. Fade 0 returns the mask as it is (in L)."""
    gray = mask.convert("L")
    if fade_size_px <= 0:
        return gray
    # Binarised first: grey input pixels would otherwise start fades of their own.
    black = np.asarray(gray) <= threshold
    if not black.any():
        return Image.new("L", gray.size, 255)
    # Distance of every pixel to the nearest black pixel (0 on black).
    distance = cv2.distanceTransform((~black).astype(np.uint8), cv2.DIST_L2, 5)
    position = np.clip(distance / fade_size_px, 0.0, 1.0)
    start, end = 1 / (1 + np.exp(5.0)), 1 / (1 + np.exp(-5.0))
    fade = (1 / (1 + np.exp(-10 * (position - 0.5))) - start) / (end - start)
    values = np.where(black, 0.0, np.clip(fade, 0.0, 1.0) * 255)
    return Image.fromarray(np.round(values).astype(np.uint8), mode="L")
