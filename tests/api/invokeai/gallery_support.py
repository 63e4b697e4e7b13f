"""Helpers for the images and boards tests: test images and the upload call."""

from __future__ import annotations

import io
from typing import Any, cast

import httpx
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def png_bytes(
    width: int = 64,
    height: int = 48,
    *,
    mode: str = "RGB",
    color: Any = (200, 30, 30),
    text: dict[str, str] | None = None,
    image_format: str = "PNG",
) -> bytes:
    image = Image.new(mode, (width, height), color)
    buffer = io.BytesIO()
    if image_format == "PNG":
        info = PngInfo()
        for key, value in (text or {}).items():
            info.add_text(key, value)
        image.save(buffer, format="PNG", pnginfo=info)
    else:
        image.save(buffer, format=image_format)
    return buffer.getvalue()


async def upload(
    client: httpx.AsyncClient,
    data: bytes | None = None,
    *,
    category: str = "general",
    is_intermediate: bool = False,
    content_type: str = "image/png",
    filename: str = "upload.png",
    form: dict[str, str] | None = None,
    expect: int = 201,
    **query: Any,
) -> dict[str, Any]:
    """POST /images/upload; returns the JSON body after checking the status."""
    params = {"image_category": category, "is_intermediate": str(is_intermediate).lower()}
    params.update({key: str(value).lower() if isinstance(value, bool) else value for key, value in query.items()})
    response = await client.post(
        "/api/v1/images/upload",
        params=params,
        files={"file": (filename, png_bytes() if data is None else data, content_type)},
        data=form or {},
    )
    assert response.status_code == expect, response.text
    return cast(dict[str, Any], response.json())
