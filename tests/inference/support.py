"""Helpers shared by the inference tests."""

from __future__ import annotations

import numpy as np
from PIL import Image

from serve_app.domain.generation import GenerationRequest


def request(**overrides: object) -> GenerationRequest:
    """A small, fast request: 64x64, 2 steps."""
    fields: dict[str, object] = {
        "model": "tiny",
        "prompt": "the cat on a mat",
        "negative_prompt": "blurry",
        "width": 64,
        "height": 64,
        "steps": 2,
        "seed": 7,
        **overrides,
    }
    return GenerationRequest.model_validate(fields)


def pixels(image: Image.Image) -> np.ndarray:
    """The image as a signed integer array, so differences do not wrap around."""
    return np.asarray(image, dtype=np.int16)
