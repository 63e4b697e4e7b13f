"""The PIL operations of InvokeAI's compositing nodes: blank image, crop, paste (with InvokeAI's inverted
mask) and mask from alpha."""

from __future__ import annotations

from PIL import Image, ImageOps

from serve_app.domain.errors import InvalidRequest

# An operation making an image larger than this is a mistake (a paste offset of a million pixels), not a request.
MAX_PIXELS = 8192 * 8192


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidRequest(f"width and height must be positive, got {width}x{height}", field="width")
    if width * height > MAX_PIXELS:
        raise InvalidRequest(f"An image of {width}x{height} is larger than {MAX_PIXELS} pixels", field="width")


def blank(width: int, height: int, mode: str, color: tuple[int, int, int, int]) -> Image.Image:
    """`blank_image`: one colour (its alpha ignored in RGB mode, as PIL does)."""
    _check_size(width, height)
    return Image.new(mode, (width, height), color if mode == "RGBA" else color[:3])


def crop(image: Image.Image, x: int, y: int, width: int, height: int) -> Image.Image:
    """`img_crop`: the box as RGBA, transparent where it lies outside the image."""
    _check_size(width, height)
    result = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    result.paste(image, (-x, -y))
    return result


def paste(
    base: Image.Image, image: Image.Image, mask: Image.Image | None, x: int, y: int, *, crop_to_base: bool
) -> Image.Image:
    """`img_paste`: `image` over `base` at (x, y) on an RGBA canvas holding both (cropped to `base` with
    `crop_to_base`). The mask is inverted first, as InvokeAI does: `image` lands where `mask` is black."""
    if mask is not None and mask.size != image.size:
        raise InvalidRequest(f"The mask is {mask.width}x{mask.height}, the image {image.width}x{image.height}",
                             field="mask")  # fmt: skip
    left, top = min(0, x), min(0, y)
    right, bottom = max(base.width, image.width + x), max(base.height, image.height + y)
    _check_size(right - left, bottom - top)
    result = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    result.paste(base.convert("RGBA"), (-left, -top))
    keep = None if mask is None else ImageOps.invert(mask.convert("L"))
    result.paste(image.convert("RGBA"), (x - left, y - top), keep)
    if crop_to_base:
        result = result.crop((-left, -top, -left + base.width, -top + base.height))
    return result


def mask_from_alpha(image: Image.Image, invert: bool) -> Image.Image:
    """`tomask`: the alpha channel (white = opaque; an image without alpha is all opaque), or its inverse."""
    alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
    return ImageOps.invert(alpha) if invert else alpha
