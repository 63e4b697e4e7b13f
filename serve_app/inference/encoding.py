"""Image bytes for storage: full-size PNG with text metadata, and a small WebP thumbnail.

The codecs live in `serve_app.domain.imaging` (the image service uses them for uploads too);
this module keeps the executor's import path.
"""

from __future__ import annotations

from serve_app.domain.imaging import encode_png, encode_thumbnail

__all__ = ["encode_png", "encode_thumbnail"]
