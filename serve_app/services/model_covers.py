"""Model cover images for ModelService: PNGs in the object store under the model's key, flagged on its registry
row (`has_cover_image`) so listings need not ask the store."""

from __future__ import annotations

import asyncio
import contextlib
import io

from PIL import Image

from serve_app.domain.errors import ImageNotFound, NotFound
from serve_app.domain.imaging import DecodeLimits, decode_upload
from serve_app.domain.models import ModelRecord
from serve_app.domain.ports import ModelRegistry, ObjectStore

# InvokeAI stores cover images shrunk to fit this square.
COVER_IMAGE_SIZE = 256


def cover_image_key(key: str) -> str:
    """The object-store key of a model's cover image."""
    return f"model_images/{key}.png"


def _cover_png(data: bytes) -> bytes:
    decoded = decode_upload(data, DecodeLimits())
    image = decoded.image
    image.thumbnail((COVER_IMAGE_SIZE, COVER_IMAGE_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class ModelCovers:
    """Reading, replacing and removing a model's cover image."""

    def __init__(self, registry: ModelRegistry, store: ObjectStore) -> None:
        self._registry = registry
        self._store = store

    async def cover_image(self, key: str) -> bytes:
        """The PNG cover image; ModelNotFound, or NotFound when the model has none."""
        record = await self._registry.get(key)
        if not record.has_cover_image:
            raise NotFound(f"Model {key} has no cover image")
        try:
            return await self._store.get(cover_image_key(key))
        except ImageNotFound:
            raise NotFound(f"Model {key} has no cover image") from None

    async def set_cover_image(self, key: str, data: bytes) -> None:
        """Store an uploaded image (any format PIL reads; UnsupportedMediaType otherwise) as the cover, a PNG
        shrunk to fit 256 px."""
        await self._registry.get(key)
        png = await asyncio.to_thread(_cover_png, data)
        await self._store.put(cover_image_key(key), png, "image/png")
        await self._registry.update(key, {"has_cover_image": True})

    async def delete_cover_image(self, key: str) -> None:
        """Remove the cover image (none is not an error); ModelNotFound."""
        await self._registry.get(key)
        await self._store.delete([cover_image_key(key)])
        await self._registry.update(key, {"has_cover_image": False})

    async def discard(self, key: str) -> None:
        """Remove the cover image of a model that is no longer registered."""
        await self._store.delete([cover_image_key(key)])

    async def move(self, record: ModelRecord, new_key: str) -> None:
        """Give the cover image of `record` to its new key (a converted model; its row keeps `has_cover_image`)."""
        if not record.has_cover_image:
            return
        with contextlib.suppress(ImageNotFound):
            data = await self._store.get(cover_image_key(record.key))
            await self._store.put(cover_image_key(new_key), data, "image/png")
        await self._store.delete([cover_image_key(record.key)])
