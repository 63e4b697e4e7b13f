"""Image helpers of InvokeAI's nodes: `img_resize` and the image -> tensor conversion its VAE/mask nodes share."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from serve_app.domain.errors import InvalidRequest

# InvokeAI's `resample_mode` names (PIL_RESAMPLING_MODES).
RESAMPLE_MODES: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize(image: Image.Image, width: int, height: int, resample_mode: str = "bicubic") -> Image.Image:
    """The `img_resize` node: `image` scaled to exactly `width` × `height` with one of `RESAMPLE_MODES`."""
    mode = RESAMPLE_MODES.get(resample_mode)
    if mode is None:
        raise InvalidRequest(
            f"resample_mode must be one of {', '.join(RESAMPLE_MODES)}, got {resample_mode}", field="resample_mode"
        )
    if width <= 0 or height <= 0:
        raise InvalidRequest(f"width and height must be positive, got {width}x{height}", field="width")
    return image.resize((width, height), resample=mode)


def image_to_tensor(image: Image.Image, *, normalize: bool = True, multiple_of: int = 8) -> Any:
    """InvokeAI's `image_resized_to_grid_as_tensor`: [1, C, H, W] float32 with H, W trimmed down to multiples of
    `multiple_of` (Lanczos when that changes the size); values in [-1, 1], or [0, 1] without `normalize`."""
    width, height = image.size
    width, height = width - width % multiple_of, height - height % multiple_of
    if width <= 0 or height <= 0:
        raise InvalidRequest(f"image is smaller than {multiple_of}x{multiple_of}", field="image")
    if (width, height) != image.size:
        image = image.resize((width, height), resample=Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)
    return tensor * 2 - 1 if normalize else tensor
