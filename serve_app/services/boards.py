"""BoardService: InvokeAI's boards and board images (an image is on at most one board)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from serve_app.domain.boards import (
    NO_BOARD,
    Board,
    BoardChanges,
    BoardMove,
    BoardNotFound,
    BoardOrderBy,
    BoardPage,
    DeletedBoard,
    ImageQuery,
    ImagesChanged,
    SortDirection,
    affected_boards,
)
from serve_app.domain.errors import ImageNotFound, InvalidRequest
from serve_app.domain.images import ImageCategory, object_keys
from serve_app.domain.ports import BoardRepository, ImageRepository, ObjectStore
from serve_app.services.images import is_plain_name

log = logging.getLogger(__name__)

MAX_BOARD_NAME = 300


class BoardGateway(Protocol):
    """What the HTTP layer needs for boards: BoardService in-process (or a client of it elsewhere)."""

    async def create(self, board_name: str, *, is_private: bool = False, owner: str) -> Board:
        """A new, empty board."""
        ...

    # `owner` below: the caller when they may touch only their own boards and images (a non-admin with auth
    # on), None for everyone's. Another owner's board is "not found"; their images are skipped like unknown names.

    async def get(self, board_id: str, *, owner: str | None = None) -> Board:
        """One board; raise BoardNotFound."""
        ...

    async def list_boards(
        self,
        *,
        order_by: BoardOrderBy = BoardOrderBy.CREATED_AT,
        direction: SortDirection = SortDirection.DESC,
        include_archived: bool = False,
        offset: int = 0,
        limit: int | None = None,
        owner: str | None = None,
    ) -> BoardPage:
        """Boards in order (limit None: all) and the total."""
        ...

    async def update(self, board_id: str, changes: BoardChanges, *, owner: str | None = None) -> Board:
        """Rename, archive or unarchive; raise BoardNotFound."""
        ...

    async def delete(self, board_id: str, *, include_images: bool = False, owner: str | None = None) -> DeletedBoard:
        """Delete a board, taking its images off it or deleting them (and their objects) too."""
        ...

    async def image_names(
        self,
        board_id: str,
        *,
        categories: Sequence[ImageCategory] | None = None,
        is_intermediate: bool | None = None,
        owner: str | None = None,
    ) -> list[str]:
        """The names of a board's images (board_id "none": images on no board), newest first."""
        ...

    async def add_image(self, board_id: str, image_name: str, *, owner: str | None = None) -> ImagesChanged:
        """Move one image onto a board; raise BoardNotFound or ImageNotFound."""
        ...

    async def add_images(self, board_id: str, image_names: Sequence[str], *, owner: str | None = None) -> ImagesChanged:
        """Move images onto a board, skipping unknown names; raise BoardNotFound."""
        ...

    async def remove_image(self, image_name: str, *, owner: str | None = None) -> ImagesChanged:
        """Take one image off its board; raise ImageNotFound."""
        ...

    async def remove_images(self, image_names: Sequence[str], *, owner: str | None = None) -> ImagesChanged:
        """Take images off their boards, skipping unknown names."""
        ...


class BoardService:
    """Boards over the board and image repositories (one Postgres class implements both)."""

    def __init__(self, *, boards: BoardRepository, images: ImageRepository, store: ObjectStore) -> None:
        self._boards = boards
        self._images = images
        self._store = store

    async def create(self, board_name: str, *, is_private: bool = False, owner: str) -> Board:
        if len(board_name) > MAX_BOARD_NAME:
            raise InvalidRequest(f"board_name is longer than {MAX_BOARD_NAME} characters", field="board_name")
        return await self._boards.create_board(board_name, is_private=is_private, owner=owner)

    async def get(self, board_id: str, *, owner: str | None = None) -> Board:
        board = await self._boards.get_board(board_id)
        if owner is not None and board.owner != owner:
            raise BoardNotFound()
        return board

    async def list_boards(
        self,
        *,
        order_by: BoardOrderBy = BoardOrderBy.CREATED_AT,
        direction: SortDirection = SortDirection.DESC,
        include_archived: bool = False,
        offset: int = 0,
        limit: int | None = None,
        owner: str | None = None,
    ) -> BoardPage:
        if offset < 0 or (limit is not None and limit < 0):
            raise InvalidRequest("offset and limit must not be negative")
        return await self._boards.list_boards(
            order_by=order_by,
            direction=direction,
            include_archived=include_archived,
            offset=offset,
            limit=limit,
            owner=owner,
        )

    # A board's owner never changes, so checking it before the change is enough.

    async def update(self, board_id: str, changes: BoardChanges, *, owner: str | None = None) -> Board:
        await self.get(board_id, owner=owner)
        return await self._boards.update_board(board_id, changes)

    async def delete(self, board_id: str, *, include_images: bool = False, owner: str | None = None) -> DeletedBoard:
        await self.get(board_id, owner=owner)
        records = await self._boards.delete_board(board_id, include_images=include_images)
        names = [record.name for record in records]
        if not include_images:
            return DeletedBoard(board_id=board_id, deleted_board_images=names, deleted_images=[])
        keys = object_keys(records)
        if keys:
            try:
                await self._store.delete(keys)
            except Exception:
                log.exception("could not delete %d objects of board %s (now orphaned)", len(keys), board_id)
        return DeletedBoard(board_id=board_id, deleted_board_images=[], deleted_images=names)

    async def image_names(
        self,
        board_id: str,
        *,
        categories: Sequence[ImageCategory] | None = None,
        is_intermediate: bool | None = None,
        owner: str | None = None,
    ) -> list[str]:
        if owner is not None and board_id != NO_BOARD:
            await self.get(board_id, owner=owner)
        query = ImageQuery(
            board_id=board_id,
            categories=None if categories is None else tuple(categories),
            is_intermediate=is_intermediate,
            starred_first=False,
            owner=owner,
        )
        return (await self._images.names(query)).image_names

    async def add_image(self, board_id: str, image_name: str, *, owner: str | None = None) -> ImagesChanged:
        result = await self.add_images(board_id, [image_name], owner=owner)
        if not result.images:
            raise ImageNotFound(f"No image {image_name!r}")
        return result

    async def add_images(self, board_id: str, image_names: Sequence[str], *, owner: str | None = None) -> ImagesChanged:
        if owner is not None:
            await self.get(board_id, owner=owner)
        moves = await self._boards.move_images(await self._own(image_names, owner), board_id)
        return _moved(moves, board_id)

    async def remove_image(self, image_name: str, *, owner: str | None = None) -> ImagesChanged:
        result = await self.remove_images([image_name], owner=owner)
        if not result.images:
            raise ImageNotFound(f"No image {image_name!r}")
        return result

    async def remove_images(self, image_names: Sequence[str], *, owner: str | None = None) -> ImagesChanged:
        moves = await self._boards.move_images(await self._own(image_names, owner), None)
        return _moved(moves, None)

    async def _own(self, image_names: Sequence[str], owner: str | None) -> list[str]:
        """The plain names among `image_names`, only `owner`'s images when set."""
        plain = _plain(image_names)
        if owner is None:
            return plain
        return [record.name for record in await self._images.get_many(plain) if record.owner == owner]


def _plain(names: Sequence[str]) -> list[str]:
    return [name for name in names if is_plain_name(name)]


def _moved(moves: Sequence[BoardMove], board_id: str | None) -> ImagesChanged:
    """The moved images; affected boards are the old ones, then the new one (as InvokeAI lists them)."""
    return ImagesChanged(
        images=[move.image_name for move in moves],
        affected_boards=affected_boards([*(move.old_board_id for move in moves), board_id]) if moves else [],
    )
