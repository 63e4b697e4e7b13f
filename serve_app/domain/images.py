"""Generated images: what an executor reports and what the database keeps."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
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


class ResourceOrigin(StrEnum):
    """Where an image came from (InvokeAI's ResourceOrigin): generated here, or uploaded."""

    INTERNAL = "internal"
    EXTERNAL = "external"


class ImageCategory(StrEnum):
    """InvokeAI's image categories: `general` is the gallery, the others are assets."""

    GENERAL = "general"
    MASK = "mask"
    CONTROL = "control"
    USER = "user"
    OTHER = "other"


class ImageRecord(StoredImage):
    """An image row in Postgres."""

    job_id: uuid.UUID | None
    category: str = "general"
    is_intermediate: bool = False
    created_at: datetime
    # InvokeAI's image record (migration 0002); the defaults are what an Enfugue job's image gets.
    origin: str = ResourceOrigin.INTERNAL.value
    board_id: str | None = None
    starred: bool = False
    session_id: str | None = None
    node_id: str | None = None
    has_workflow: bool = False
    owner: str = "admin"
    updated_at: datetime | None = None
    deleted_at: datetime | None = None


class NewImage(StoredImage):
    """An image row to insert; its bytes are already in object storage under `storage_key`/`thumbnail_key`.

    A `board_id` naming no board (deleted meanwhile) leaves the image without a board."""

    session_id: str | None = None
    node_id: str | None = None
    board_id: str | None = None
    is_intermediate: bool = False
    category: ImageCategory = ImageCategory.GENERAL
    has_workflow: bool = False
    owner: str = "admin"
    job_id: uuid.UUID | None = None


class GeneratedImage(NewImage):
    """An image a graph node produced (ImageRepository.add_generated stores it with origin `internal`)."""
