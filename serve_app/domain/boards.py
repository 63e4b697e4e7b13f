"""The gallery: boards, and the queries and bulk changes over image records (InvokeAI's model)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.errors import NotFound
from serve_app.domain.images import ImageCategory, ImageRecord, ResourceOrigin

# InvokeAI's board id for "no board", in filters and in affected_boards lists.
NO_BOARD = "none"


class BoardNotFound(NotFound):
    """Board not found"""


class SortDirection(StrEnum):
    """InvokeAI's SQLiteDirection."""

    ASC = "ASC"
    DESC = "DESC"


class BoardOrderBy(StrEnum):
    """What boards may be ordered by (InvokeAI's BoardRecordOrderBy)."""

    CREATED_AT = "created_at"
    NAME = "board_name"


class Board(BaseModel):
    """A board with its computed cover image and counts."""

    board_id: str
    board_name: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    archived: bool = False
    is_private: bool = False
    owner: str = "admin"
    # The most recent non-intermediate image on the board, starred first.
    cover_image_name: str | None = None
    # Non-intermediate images: `general` ones, and the asset categories.
    image_count: int = 0
    asset_count: int = 0


class BoardChanges(BaseModel):
    """What a board update may change; None leaves a field as it is."""

    model_config = ConfigDict(frozen=True)

    board_name: str | None = Field(default=None, max_length=300)
    # Accepted for compatibility; the cover is always computed (as InvokeAI 6.8 does).
    cover_image_name: str | None = None
    archived: bool | None = None


class BoardPage(BaseModel):
    """One page of boards and how many there are in all."""

    items: list[Board]
    total: int


class DeletedBoard(BaseModel):
    """A deleted board: the images taken off it, or the images deleted with it."""

    board_id: str
    deleted_board_images: list[str]
    deleted_images: list[str]


class ImageQuery(BaseModel):
    """Filters and order of an image listing (InvokeAI's list_image_dtos)."""

    model_config = ConfigDict(frozen=True)

    image_origin: ResourceOrigin | None = None
    categories: tuple[ImageCategory, ...] | None = None
    is_intermediate: bool | None = None
    # A board id, or NO_BOARD for images on no board.
    board_id: str | None = None
    # Matched (case-insensitively, as a substring) against the stored metadata JSON and created_at.
    search_term: str | None = None
    order_dir: SortDirection = SortDirection.DESC
    starred_first: bool = True
    # Whose images (None: everyone's); set once accounts exist.
    owner: str | None = None


class ImageChanges(BaseModel):
    """What an image update may change; None leaves a field as it is."""

    model_config = ConfigDict(frozen=True)

    image_category: ImageCategory | None = None
    session_id: str | None = None
    is_intermediate: bool | None = None
    starred: bool | None = None


class ImagePage(BaseModel):
    """One page of images and how many match in all."""

    items: list[ImageRecord]
    total: int


class ImageNames(BaseModel):
    """Every matching image name in order, with counts for the gallery's optimistic updates."""

    image_names: list[str]
    # Starred images among them when ordered starred-first (0 otherwise, as InvokeAI reports).
    starred_count: int
    total_count: int


class ImagesChanged(BaseModel):
    """Images a bulk operation touched and the boards whose contents changed (NO_BOARD for none)."""

    images: list[str]
    affected_boards: list[str]


class BoardMove(BaseModel):
    """One image moved onto or off a board: the board it was on before (None: no board)."""

    image_name: str
    old_board_id: str | None


def affected_boards(board_ids: Iterable[str | None]) -> list[str]:
    """Board ids in first-seen order without repeats, NO_BOARD standing for None."""
    return list(dict.fromkeys(NO_BOARD if board_id is None else board_id for board_id in board_ids))
