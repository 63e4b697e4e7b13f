"""ImageService: InvokeAI's image use cases (upload, gallery queries, stars, deletes, bulk download).

Rows live in the ImageRepository, bytes in the ObjectStore: rows are written after their objects
and deleted before them, so a row never points at a missing object for long (an orphan object is
harmless; it is logged when its deletion fails).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image
from pydantic import BaseModel

from serve_app.domain.boards import ImageChanges, ImageNames, ImagePage, ImageQuery, ImagesChanged, affected_boards
from serve_app.domain.errors import ImageNotFound, InvalidRequest, NotFound
from serve_app.domain.images import ImageCategory, ImageRecord, NewImage, image_key, object_keys, thumbnail_key
from serve_app.domain.imaging import (
    GRAPH_CHUNK,
    METADATA_CHUNK,
    WORKFLOW_CHUNK,
    DecodeLimits,
    PayloadTooLarge,
    UnsupportedMediaType,
    decode_upload,
    encode_png,
    encode_thumbnail,
    parse_resize_to,
    png_text,
)
from serve_app.domain.ports import BusMessage, EventBus, ImageRepository, ObjectStore

log = logging.getLogger(__name__)

# Image and download names are single path segments the service made: letters, digits, `_`, `-`, dots.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$")

# InvokeAI's bulk downloads all report to one Socket.IO room.
BULK_DOWNLOAD_ROOM = "default"
DOWNLOADS_PREFIX = "downloads/"


def is_plain_name(name: str) -> bool:
    """A single safe path segment: no separators, no `..`, nothing hidden."""
    return bool(_PLAIN_NAME.fullmatch(name)) and ".." not in name


def checked_name(name: str) -> str:
    """`name` if it can be an image's name; ImageNotFound otherwise (it cannot exist)."""
    if not is_plain_name(name):
        raise ImageNotFound(f"No image {name!r}")
    return name


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 64 * 1024 * 1024
    max_resize_pixels: int = 4096 * 4096
    thumbnail_size: int = 256


class ImageUpload(BaseModel):
    """An upload as the HTTP layer received it; the service validates everything."""

    data: bytes
    content_type: str | None
    category: ImageCategory
    is_intermediate: bool
    board_id: str | None = None
    session_id: str | None = None
    crop_visible: bool = False
    # The raw form fields: JSON `{"width": W, "height": H}` and a JSON object.
    resize_to: str | None = None
    metadata: str | None = None


class ImageWorkflow(BaseModel):
    """The workflow and graph JSON strings stored in an image's PNG chunks."""

    workflow: str | None
    graph: str | None


class ImageGateway(Protocol):
    """What the HTTP layer needs for images: ImageService in-process (or a client of it elsewhere)."""

    async def upload(self, upload: ImageUpload, *, owner: str) -> ImageRecord:
        """Validate, store and record an uploaded image (origin external)."""
        ...

    # `owner` below: the caller when they may see only their own images (a non-admin with auth on), None for
    # everyone's. Another owner's image is "not found" (404), never "forbidden".

    async def get(self, name: str, *, owner: str | None = None) -> ImageRecord:
        """One image; raise ImageNotFound."""
        ...

    async def list_images(self, query: ImageQuery, *, offset: int, limit: int, owner: str | None = None) -> ImagePage:
        """One page of matching images (limit 0: only the total)."""
        ...

    async def names(self, query: ImageQuery, *, owner: str | None = None) -> ImageNames:
        """Every matching name in order, with counts."""
        ...

    async def get_many(self, names: Sequence[str], *, owner: str | None = None) -> list[ImageRecord]:
        """The named images in request order; unknown names skipped."""
        ...

    async def update(self, name: str, changes: ImageChanges, *, owner: str | None = None) -> ImageRecord:
        """Apply changes; raise ImageNotFound."""
        ...

    async def delete(self, names: Sequence[str], *, owner: str | None = None) -> ImagesChanged:
        """Delete images and their objects; unknown names are skipped."""
        ...

    async def count_intermediates(self, *, owner: str | None = None) -> int:
        """How many intermediate images there are."""
        ...

    async def delete_intermediates(self, *, owner: str | None = None) -> int:
        """Delete every intermediate image and its objects; return how many."""
        ...

    async def delete_uncategorized(self, *, owner: str | None = None) -> ImagesChanged:
        """Delete every image on no board, and their objects."""
        ...

    async def star(self, names: Sequence[str], starred: bool, *, owner: str | None = None) -> ImagesChanged:
        """Star or unstar images."""
        ...

    async def full(self, name: str, *, owner: str | None = None) -> bytes:
        """The PNG bytes; raise ImageNotFound."""
        ...

    async def thumbnail(self, name: str, *, owner: str | None = None) -> bytes:
        """The WebP thumbnail bytes; raise ImageNotFound."""
        ...

    async def metadata(self, name: str, *, owner: str | None = None) -> dict[str, Any] | None:
        """The stored metadata (None when there is none); raise ImageNotFound."""
        ...

    async def workflow(self, name: str, *, owner: str | None = None) -> ImageWorkflow:
        """The workflow and graph from the PNG's chunks; raise ImageNotFound."""
        ...

    async def start_download(
        self,
        image_names: Sequence[str] | None,
        board_id: str | None,
        *,
        owner: str | None = None,
        requester: str | None = None,
    ) -> str:
        """Start building a zip in the background; return its item name (events report progress to `requester`
        and admins; to everyone in the room when None)."""
        ...

    async def take_download(self, item_name: str) -> bytes:
        """A finished zip's bytes, deleted once taken; raise NotFound."""
        ...


class ImageService:
    """InvokeAI's image use cases over an ImageRepository and an ObjectStore."""

    def __init__(
        self,
        *,
        repo: ImageRepository,
        store: ObjectStore,
        bus: EventBus | None = None,
        limits: UploadLimits | None = None,
    ) -> None:
        self._repo = repo
        self._store = store
        self._bus = bus
        self._limits = limits or UploadLimits()
        self._downloads: set[asyncio.Task[None]] = set()

    @property
    def limits(self) -> UploadLimits:
        return self._limits

    # Uploads

    async def upload(self, upload: ImageUpload, *, owner: str) -> ImageRecord:
        """Validate, store and record an uploaded image (origin external, name `<uuid4>.png`)."""
        if not (upload.content_type or "").startswith("image"):
            raise UnsupportedMediaType("Not an image")
        if len(upload.data) > self._limits.max_bytes:
            raise PayloadTooLarge(f"Image larger than {self._limits.max_bytes} bytes")
        decode_limits = DecodeLimits(
            max_pixels=self._limits.max_pixels, max_resize_pixels=self._limits.max_resize_pixels
        )
        resize_to = _parse_resize_to(upload.resize_to, decode_limits)
        metadata = _parse_metadata(upload.metadata)
        decoded = await asyncio.to_thread(
            decode_upload, upload.data, decode_limits, resize_to=resize_to, crop_visible=upload.crop_visible
        )
        if metadata is None:
            # No metadata field: keep what an InvokeAI PNG carries, when it is a JSON object.
            metadata = _json_object(decoded.chunks.get(METADATA_CHUNK))
        chunks = {key: value for key, value in decoded.chunks.items() if key != METADATA_CHUNK}
        if metadata:
            chunks = {METADATA_CHUNK: json.dumps(metadata), **chunks}
        png, thumb = await asyncio.to_thread(_encode, decoded.image, chunks, self._limits.thumbnail_size)

        name = f"{uuid.uuid4()}.png"
        image = NewImage(
            name=name,
            width=decoded.image.width,
            height=decoded.image.height,
            position=0,
            storage_key=image_key(name),
            thumbnail_key=thumbnail_key(name),
            metadata=metadata or {},
            category=upload.category,
            is_intermediate=upload.is_intermediate,
            board_id=upload.board_id,
            session_id=upload.session_id,
            has_workflow=WORKFLOW_CHUNK in chunks or GRAPH_CHUNK in chunks,
            owner=owner,
        )
        await self._store.put(image.storage_key, png, "image/png")
        await self._store.put(image.thumbnail_key, thumb, "image/webp")
        try:
            return await self._repo.add_uploaded(image)
        except BaseException:
            await self._delete_objects([image.storage_key, image.thumbnail_key])
            raise

    # Records

    async def get(self, name: str, *, owner: str | None = None) -> ImageRecord:
        record = await self._repo.get(checked_name(name))
        if owner is not None and record.owner != owner:
            raise ImageNotFound(f"No image {name!r}")
        return record

    async def list_images(self, query: ImageQuery, *, offset: int, limit: int, owner: str | None = None) -> ImagePage:
        if offset < 0 or limit < 0:
            raise InvalidRequest("offset and limit must not be negative")
        return await self._repo.list_images(_owned(query, owner), offset=offset, limit=limit)

    async def names(self, query: ImageQuery, *, owner: str | None = None) -> ImageNames:
        return await self._repo.names(_owned(query, owner))

    async def get_many(self, names: Sequence[str], *, owner: str | None = None) -> list[ImageRecord]:
        records = await self._repo.get_many([name for name in names if is_plain_name(name)])
        return [record for record in records if owner is None or record.owner == owner]

    async def update(self, name: str, changes: ImageChanges, *, owner: str | None = None) -> ImageRecord:
        await self.get(name, owner=owner)  # an image's owner never changes: checking first is enough
        return await self._repo.update(checked_name(name), changes)

    async def delete(self, names: Sequence[str], *, owner: str | None = None) -> ImagesChanged:
        deleted = await self._repo.delete(await self._own_names(names, owner))
        await self._delete_objects(object_keys(deleted))
        return _changed(deleted)

    async def count_intermediates(self, *, owner: str | None = None) -> int:
        return await self._repo.count_intermediates(owner)

    async def delete_intermediates(self, *, owner: str | None = None) -> int:
        deleted = await self._repo.delete_intermediates(owner)
        await self._delete_objects(object_keys(deleted))
        return len(deleted)

    async def delete_uncategorized(self, *, owner: str | None = None) -> ImagesChanged:
        deleted = await self._repo.delete_uncategorized(owner)
        await self._delete_objects(object_keys(deleted))
        return _changed(deleted)

    async def star(self, names: Sequence[str], starred: bool, *, owner: str | None = None) -> ImagesChanged:
        return _changed(await self._repo.set_starred(await self._own_names(names, owner), starred))

    async def _own_names(self, names: Sequence[str], owner: str | None) -> list[str]:
        """The plain names among `names`, only `owner`'s when set (others' are skipped like unknown ones)."""
        plain = [name for name in names if is_plain_name(name)]
        if owner is None:
            return plain
        return [record.name for record in await self.get_many(plain, owner=owner)]

    # Bytes

    async def full(self, name: str, *, owner: str | None = None) -> bytes:
        record = await self.get(name, owner=owner)
        return await self._store.get(record.storage_key)

    async def thumbnail(self, name: str, *, owner: str | None = None) -> bytes:
        record = await self.get(name, owner=owner)
        return await self._store.get(record.thumbnail_key)

    async def metadata(self, name: str, *, owner: str | None = None) -> dict[str, Any] | None:
        record = await self.get(name, owner=owner)
        return record.metadata or None

    async def workflow(self, name: str, *, owner: str | None = None) -> ImageWorkflow:
        text = png_text(await self.full(name, owner=owner))
        return ImageWorkflow(workflow=text.get(WORKFLOW_CHUNK), graph=text.get(GRAPH_CHUNK))

    # Bulk download

    async def start_download(
        self,
        image_names: Sequence[str] | None,
        board_id: str | None,
        *,
        owner: str | None = None,
        requester: str | None = None,
    ) -> str:
        """Start building a zip of the images (or of a board's images) in a background task; with `owner`, of
        their images only. Its events go to `requester` (default `owner`) and admins: the item name is all it
        takes to fetch the zip, so no one else may hear it."""
        if not image_names and board_id is None:
            raise InvalidRequest("No images or board id specified.")
        item_id = str(uuid.uuid4())
        item_name = f"{item_id}.zip"
        task = asyncio.create_task(
            self._build_download(item_id, item_name, list(image_names or []), board_id, owner, requester or owner)
        )
        self._downloads.add(task)
        task.add_done_callback(self._downloads.discard)
        return item_name

    async def take_download(self, item_name: str) -> bytes:
        """A finished zip's bytes; the object is deleted once read."""
        if not item_name.endswith(".zip") or not is_plain_name(item_name):
            raise NotFound(f"No download {item_name!r}")
        key = DOWNLOADS_PREFIX + item_name
        data = await self._store.get(key)
        await self._delete_objects([key])
        return data

    async def wait_for_downloads(self) -> None:
        """Wait until every download started so far has finished (tests, graceful shutdown)."""
        while self._downloads:
            await asyncio.gather(*self._downloads, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel downloads still being built."""
        for task in list(self._downloads):
            task.cancel()
        await self.wait_for_downloads()

    async def _build_download(
        self,
        item_id: str,
        item_name: str,
        image_names: list[str],
        board_id: str | None,
        owner: str | None,
        requester: str | None,
    ) -> None:
        await self._publish_download("bulk_download_started", item_id, item_name, requester)
        try:
            if board_id is not None:
                query = ImageQuery(board_id=board_id, starred_first=False, owner=owner)
                image_names = (await self._repo.names(query)).image_names
            records = await self.get_many(image_names, owner=owner)
            files = [(record.name, await self._store.get(record.storage_key)) for record in records]
            archive = await asyncio.to_thread(_zip, files)
            await self._store.put(DOWNLOADS_PREFIX + item_name, archive, "application/zip")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("bulk download %s failed", item_name)
            await self._publish_download("bulk_download_error", item_id, item_name, requester, error=str(exc))
            return
        await self._publish_download("bulk_download_complete", item_id, item_name, requester)

    async def _publish_download(
        self, event: str, item_id: str, item_name: str, owner: str | None, **extra: str
    ) -> None:
        if self._bus is None:
            return
        data: dict[str, Any] = {
            "bulk_download_id": BULK_DOWNLOAD_ROOM,
            "bulk_download_item_id": item_id,
            "bulk_download_item_name": item_name,
            "timestamp": int(time.time()),
            **extra,
        }
        try:
            await self._bus.publish(BusMessage(event=event, room=BULK_DOWNLOAD_ROOM, data=data, owner=owner))
        except Exception:
            # Events are a courtesy: the zip is still there for GET /download/{name}.
            log.exception("could not publish %s for %s", event, item_name)

    async def _delete_objects(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            await self._store.delete(keys)
        except Exception:
            log.exception("could not delete %d objects (now orphaned), e.g. %s", len(keys), keys[0])


def _owned(query: ImageQuery, owner: str | None) -> ImageQuery:
    """The query narrowed to `owner`'s images (None: as it was)."""
    return query if owner is None else query.model_copy(update={"owner": owner})


def _changed(records: Sequence[ImageRecord]) -> ImagesChanged:
    return ImagesChanged(
        images=[record.name for record in records],
        affected_boards=affected_boards(record.board_id for record in records),
    )


def _parse_resize_to(raw: str | None, limits: DecodeLimits) -> tuple[int, int] | None:
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidRequest("Invalid resize_to format or size", field="resize_to") from None
    if not isinstance(value, dict):
        raise InvalidRequest("Invalid resize_to format or size", field="resize_to")
    return parse_resize_to(value.get("width"), value.get("height"), limits)


def _parse_metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    value = _json_object(raw)
    if value is None:
        raise InvalidRequest("metadata must be a JSON object", field="metadata")
    return value


def _json_object(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _encode(image: Image.Image, chunks: dict[str, str], thumbnail_size: int) -> tuple[bytes, bytes]:
    return encode_png(image, chunks), encode_thumbnail(image, thumbnail_size)


def _zip(files: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    # PNGs are compressed already: store them.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()
