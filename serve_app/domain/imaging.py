"""Pure-PIL image codecs shared by the executor (generated images) and the image service (uploads).

Storage format: a full-size PNG carrying InvokeAI's text chunks, and a WebP thumbnail.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.errors import PayloadTooLarge as PayloadTooLarge  # re-exported: the upload errors
from serve_app.domain.errors import UnsupportedMediaType as UnsupportedMediaType

_THUMBNAIL_QUALITY = 80

# The PNG text chunks InvokeAI writes and reads back (metadata, workflow and graph JSON strings).
METADATA_CHUNK = "invokeai_metadata"
WORKFLOW_CHUNK = "invokeai_workflow"
GRAPH_CHUNK = "invokeai_graph"
INVOKEAI_CHUNKS = (METADATA_CHUNK, WORKFLOW_CHUNK, GRAPH_CHUNK)

# What an upload may be. PIL can open more (EPS would even run Ghostscript): those are refused unread.
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

# Modes a PNG stores as they are; anything else (CMYK, YCbCr, I;16, F...) is converted first.
_PNG_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "P"})


def encode_png(image: Image.Image, text: dict[str, str]) -> bytes:
    """PNG bytes of `image` with one tEXt chunk per entry of `text` (InvokeAI and Enfugue read them back)."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def encode_thumbnail(image: Image.Image, max_side: int = 256) -> bytes:
    """WebP bytes of `image` shrunk so its longer side is at most `max_side`, aspect ratio kept."""
    if max_side < 1:
        raise ValueError("max_side must be positive")
    thumbnail = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    # thumbnail() only ever shrinks, and keeps the aspect ratio.
    thumbnail.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="WEBP", quality=_THUMBNAIL_QUALITY)
    return buffer.getvalue()


def png_text(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG (empty for other formats or unreadable bytes); reads no pixel data."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            # Chunks written before the pixel data (as encode_png and InvokeAI write them) are read at open.
            return {str(key): value for key, value in image.info.items() if isinstance(value, str)}
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return {}


@dataclass(frozen=True)
class DecodeLimits:
    """What an uploaded image may be: pixels are checked from the header, before any decoding."""

    max_pixels: int = 64 * 1024 * 1024
    max_resize_pixels: int = 4096 * 4096


@dataclass
class DecodedUpload:
    """An uploaded image ready to store: the pixels and the InvokeAI chunks found in the file."""

    image: Image.Image
    chunks: dict[str, str] = field(default_factory=dict)


def decode_upload(
    data: bytes,
    limits: DecodeLimits,
    *,
    resize_to: tuple[int, int] | None = None,
    crop_visible: bool = False,
) -> DecodedUpload:
    """Open, check and normalise an upload (the first frame of animated formats).

    Raises UnsupportedMediaType("Failed to read image") for bytes PIL cannot read and
    InvalidRequest for images larger than `limits` (a decompression bomb never gets decoded)."""
    # PIL warns above its own pixel limit (and raises above twice that) while opening; the size check
    # below refuses such images anyway, and a warning turned into an error is the same refusal.
    try:
        opened = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequest("Image has too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UnsupportedMediaType("Failed to read image") from None
    with opened:
        width, height = opened.size
        if width < 1 or height < 1:
            raise UnsupportedMediaType("Failed to read image")
        if width * height > limits.max_pixels:
            raise InvalidRequest(f"Image has too many pixels: {width}x{height} exceeds {limits.max_pixels}")
        try:
            opened.load()
            image = _normalised(opened)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidRequest("Image has too many pixels") from None
        except (OSError, SyntaxError, ValueError):
            raise UnsupportedMediaType("Failed to read image") from None
        # After load(): text chunks that follow the pixel data are read by then too.
        chunks: dict[str, str] = {}
        if opened.format == "PNG":
            chunks = {key: opened.info[key] for key in INVOKEAI_CHUNKS if isinstance(opened.info.get(key), str)}
    if crop_visible:
        box = image.getbbox()
        if box is not None:
            image = image.crop(box)
    if resize_to is not None:
        image = image.resize(resize_to, Image.Resampling.LANCZOS)
    return DecodedUpload(image=image, chunks=chunks)


def parse_resize_to(width: object, height: object, limits: DecodeLimits) -> tuple[int, int]:
    """Validate `resize_to` dimensions: positive integers with width·height ≤ max_resize_pixels."""
    if not isinstance(width, int) or not isinstance(height, int) or isinstance(width, bool) or isinstance(height, bool):
        raise InvalidRequest("Invalid resize_to format or size", field="resize_to")
    if width < 1 or height < 1 or width * height > limits.max_resize_pixels:
        raise InvalidRequest("Invalid resize_to format or size", field="resize_to")
    return width, height


def _normalised(image: Image.Image) -> Image.Image:
    """The first frame, upright (EXIF orientation applied), in a mode PNG stores."""
    frame = ImageOps.exif_transpose(image)
    if frame.mode in _PNG_MODES and frame.mode != "P":
        return frame.copy()
    has_alpha = "A" in frame.mode or "transparency" in frame.info
    return frame.convert("RGBA" if has_alpha else "RGB")
