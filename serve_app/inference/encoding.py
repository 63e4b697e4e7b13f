"""Image bytes for storage: full-size PNG with text metadata, and a small WebP thumbnail."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

_THUMBNAIL_QUALITY = 80


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
