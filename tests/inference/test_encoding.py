"""PNG with text chunks and WebP thumbnails."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serve_app.inference.encoding import encode_png, encode_thumbnail


def _gradient(width: int, height: int) -> Image.Image:
    size = (width, height)
    ramp = Image.linear_gradient("L")
    return Image.merge("RGB", [ramp.resize(size), ramp.rotate(90).resize(size), Image.new("L", size)])


def test_png_keeps_pixels_and_text_chunks() -> None:
    image = _gradient(64, 96)
    text = {"invokeai_metadata": '{"seed": 7, "prompt": "a cat"}', "Software": "serve-app", "note": "ünïcode"}

    decoded = Image.open(io.BytesIO(encode_png(image, text)))

    assert decoded.format == "PNG"
    assert decoded.size == (64, 96)
    assert dict(decoded.text) == text  # type: ignore[attr-defined]
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [((512, 768), 256, (171, 256)), ((1024, 512), 256, (256, 128)), ((64, 96), 256, (64, 96))],
)
def test_thumbnail_is_webp_with_the_aspect_kept(
    size: tuple[int, int], max_side: int, expected: tuple[int, int]
) -> None:
    thumbnail = Image.open(io.BytesIO(encode_thumbnail(_gradient(*size), max_side)))

    assert thumbnail.format == "WEBP"
    assert thumbnail.size == expected


def test_thumbnail_keeps_transparency() -> None:
    image = Image.new("RGBA", (300, 150), (255, 0, 0, 0))

    thumbnail = Image.open(io.BytesIO(encode_thumbnail(image, 100)))

    assert thumbnail.size == (100, 50)
    assert thumbnail.mode == "RGBA"
