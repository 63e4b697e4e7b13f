"""InvokeAI's image and board DTOs, field for field as 6.8.1 serialises them (explicit nulls, string timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.boards import Board, ImagesChanged
from serve_app.domain.images import ImageCategory, ImageRecord, ResourceOrigin

T = TypeVar("T")


def invokeai_timestamp(value: datetime) -> str:
    """InvokeAI's SQLite timestamp text: `YYYY-MM-DD HH:MM:SS.fff` in UTC, no `T`, no zone."""
    value = value.astimezone(UTC) if value.tzinfo else value
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def _timestamp_or_none(value: datetime | None) -> str | None:
    return None if value is None else invokeai_timestamp(value)


def image_url(name: str) -> str:
    """Relative, no leading slash, as InvokeAI answers."""
    return f"api/v1/images/i/{name}/full"


def thumbnail_url(name: str) -> str:
    return f"api/v1/images/i/{name}/thumbnail"


class ImageDTO(BaseModel):
    image_name: str
    image_url: str
    thumbnail_url: str
    image_origin: ResourceOrigin
    image_category: ImageCategory
    width: int
    height: int
    created_at: str
    updated_at: str
    deleted_at: str | None = None
    is_intermediate: bool
    session_id: str | None = None
    node_id: str | None = None
    starred: bool
    has_workflow: bool
    board_id: str | None = None

    @classmethod
    def of(cls, record: ImageRecord) -> ImageDTO:
        return cls(
            image_name=record.name,
            image_url=image_url(record.name),
            thumbnail_url=thumbnail_url(record.name),
            image_origin=ResourceOrigin(record.origin),
            image_category=ImageCategory(record.category),
            width=record.width,
            height=record.height,
            created_at=invokeai_timestamp(record.created_at),
            updated_at=invokeai_timestamp(record.updated_at or record.created_at),
            deleted_at=_timestamp_or_none(record.deleted_at),
            is_intermediate=record.is_intermediate,
            session_id=record.session_id,
            node_id=record.node_id,
            starred=record.starred,
            has_workflow=record.has_workflow,
            board_id=record.board_id,
        )


class ImageUrlsDTO(BaseModel):
    image_name: str
    image_url: str
    thumbnail_url: str


class OffsetPaginatedResults(BaseModel, Generic[T]):
    limit: int
    offset: int
    total: int
    items: list[T]


class ImageNamesResult(BaseModel):
    image_names: list[str]
    starred_count: int
    total_count: int


class ImageRecordChanges(BaseModel):
    """PATCH body; unknown fields are accepted and ignored, as InvokeAI does."""

    model_config = ConfigDict(extra="allow")

    image_category: ImageCategory | None = None
    session_id: str | None = None
    is_intermediate: bool | None = None
    starred: bool | None = None


class ImageNamesBody(BaseModel):
    image_names: list[str]


class DownloadBody(BaseModel):
    image_names: list[str] | None = None
    board_id: str | None = None


class ImagesDownloaded(BaseModel):
    response: str | None = None
    bulk_download_item_name: str | None = None


class ImageWorkflowDTO(BaseModel):
    workflow: str | None = None
    graph: str | None = None


class DeleteImagesResult(BaseModel):
    affected_boards: list[str]
    deleted_images: list[str]

    @classmethod
    def of(cls, changed: ImagesChanged) -> DeleteImagesResult:
        return cls(affected_boards=changed.affected_boards, deleted_images=changed.images)


class StarredImagesResult(BaseModel):
    affected_boards: list[str]
    starred_images: list[str]


class UnstarredImagesResult(BaseModel):
    affected_boards: list[str]
    unstarred_images: list[str]


class BoardDTO(BaseModel):
    board_id: str
    board_name: str
    created_at: str
    updated_at: str
    deleted_at: str | None = None
    cover_image_name: str | None = None
    archived: bool
    is_private: bool | None = None
    image_count: int
    asset_count: int
    video_count: int = 0

    @classmethod
    def of(cls, board: Board, *, with_private: bool = True) -> BoardDTO:
        """`with_private=False` answers `is_private: null`, as InvokeAI 6.8.1's create and get do
        (its list answers the stored flag); recorded in the golden files 50/52 vs 51/56."""
        return cls(
            board_id=board.board_id,
            board_name=board.board_name,
            created_at=invokeai_timestamp(board.created_at),
            updated_at=invokeai_timestamp(board.updated_at),
            deleted_at=_timestamp_or_none(board.deleted_at),
            cover_image_name=board.cover_image_name,
            archived=board.archived,
            is_private=board.is_private if with_private else None,
            image_count=board.image_count,
            asset_count=board.asset_count,
        )


class BoardChanges(BaseModel):
    """PATCH body; unknown fields are a 422, as InvokeAI's BoardChanges forbids them."""

    model_config = ConfigDict(extra="forbid")

    board_name: str | None = Field(default=None, max_length=300)
    cover_image_name: str | None = None
    archived: bool | None = None


class DeleteBoardResult(BaseModel):
    board_id: str
    deleted_board_images: list[str]
    deleted_images: list[str]


class AddImageToBoardBody(BaseModel):
    board_id: str
    image_name: str


class RemoveImageFromBoardBody(BaseModel):
    image_name: str


class AddImagesToBoardBody(BaseModel):
    board_id: str
    image_names: list[str]


class AddImagesToBoardResult(BaseModel):
    affected_boards: list[str]
    added_images: list[str]

    @classmethod
    def of(cls, changed: ImagesChanged) -> AddImagesToBoardResult:
        return cls(affected_boards=changed.affected_boards, added_images=changed.images)


class RemoveImagesFromBoardResult(BaseModel):
    affected_boards: list[str]
    removed_images: list[str]

    @classmethod
    def of(cls, changed: ImagesChanged) -> RemoveImagesFromBoardResult:
        return cls(affected_boards=changed.affected_boards, removed_images=changed.images)
