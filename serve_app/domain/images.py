"""Generated images: what an executor reports and what the database keeps."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


def image_name(job_id: uuid.UUID, index: int) -> str:
    """Deterministic per job and index, so a retried attempt overwrites instead of duplicating."""
    return f"{job_id.hex}_{index}.png"


def image_key(name: str) -> str:
    """Object-storage key of a full-size PNG."""
    return f"images/{name}"


def thumbnail_key(name: str) -> str:
    """Object-storage key of an image's WebP thumbnail."""
    stem = name.rsplit(".", 1)[0]
    return f"thumbnails/{stem}.webp"


def object_keys(images: Iterable[StoredImage]) -> list[str]:
    """Every object an image owns in storage: the PNG and its thumbnail."""
    return [key for image in images for key in (image.storage_key, image.thumbnail_key)]


class StoredImage(BaseModel):
    """An image already written to object storage by an executor."""

    name: str
    width: int
    height: int
    position: int
    storage_key: str
    thumbnail_key: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class ImageRecord(StoredImage):
    """An image row in Postgres."""

    job_id: uuid.UUID | None
    category: str = "general"
    is_intermediate: bool = False
    created_at: datetime
