"""PgImageRepository: the ImageRepository and BoardRepository ports in Postgres (SQL in sql/images.sql).

Rows only: methods that delete images return the rows, and the caller deletes their objects after
the commit (an object store is not transactional; an orphan object is harmless, a row without its
object is not).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, LiteralString

import asyncpg

from serve_app.domain.boards import (
    Board,
    BoardChanges,
    BoardMove,
    BoardNotFound,
    BoardOrderBy,
    BoardPage,
    ImageChanges,
    ImageNames,
    ImagePage,
    ImageQuery,
    SortDirection,
)
from serve_app.domain.errors import ImageNotFound
from serve_app.domain.images import GeneratedImage, ImageRecord, NewImage, ResourceOrigin
from serve_app.storage.image_queries import IMAGE_QUERIES as Q

_ORDER_MARK: LiteralString = "/*order*/"

# The only SQL not written in images.sql: whole ORDER BY lists, chosen from these fixed tables.
# A trailing unique column makes pages stable when timestamps tie.
_IMAGE_ORDERS: dict[tuple[SortDirection, bool], LiteralString] = {
    (SortDirection.DESC, True): "starred DESC, created_at DESC, name DESC",
    (SortDirection.ASC, True): "starred DESC, created_at ASC, name ASC",
    (SortDirection.DESC, False): "created_at DESC, name DESC",
    (SortDirection.ASC, False): "created_at ASC, name ASC",
}
_BOARD_ORDERS: dict[tuple[BoardOrderBy, SortDirection], LiteralString] = {
    (BoardOrderBy.CREATED_AT, SortDirection.DESC): "boards.created_at DESC, boards.board_id DESC",
    (BoardOrderBy.CREATED_AT, SortDirection.ASC): "boards.created_at ASC, boards.board_id ASC",
    (BoardOrderBy.NAME, SortDirection.DESC): "lower(boards.board_name) DESC, boards.board_id DESC",
    (BoardOrderBy.NAME, SortDirection.ASC): "lower(boards.board_name) ASC, boards.board_id ASC",
}


def _ordered(sql: LiteralString, order: LiteralString) -> LiteralString:
    if sql.count(_ORDER_MARK) != 1:
        raise ValueError("statement has no single /*order*/ mark")
    return sql.replace(_ORDER_MARK, order)


_LIST_IMAGES = {key: _ordered(Q.list_images, order) for key, order in _IMAGE_ORDERS.items()}
_IMAGE_NAMES = {key: _ordered(Q.image_names, order) for key, order in _IMAGE_ORDERS.items()}
_LIST_BOARDS = {key: _ordered(Q.list_boards, order) for key, order in _BOARD_ORDERS.items()}


def search_pattern(term: str | None) -> str | None:
    """An ILIKE pattern matching `term` as a literal substring (None or blank: no search)."""
    if term is None or not term.strip():
        return None
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filters(query: ImageQuery) -> tuple[Any, ...]:
    """$1..$6 of list_images, count_images and image_names."""
    return (
        None if query.image_origin is None else query.image_origin.value,
        None if query.categories is None else [category.value for category in query.categories],
        query.is_intermediate,
        query.board_id,
        search_pattern(query.search_term),
        query.owner,
    )


def _image(row: Mapping[str, Any]) -> ImageRecord:
    return ImageRecord.model_validate(dict(row))


def _board(row: Mapping[str, Any]) -> Board:
    return Board.model_validate(dict(row))


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


class PgImageRepository:
    """Images and boards in Postgres, over an asyncpg pool with the jsonb codec (db.create_pool)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # Images

    async def add_generated(self, images: Sequence[GeneratedImage]) -> list[ImageRecord]:
        """Insert (or, for a retried attempt, overwrite) images a graph produced, origin `internal`."""
        return await self._insert(images, ResourceOrigin.INTERNAL)

    async def add_uploaded(self, image: NewImage) -> ImageRecord:
        """Insert an uploaded image, origin `external`."""
        (record,) = await self._insert([image], ResourceOrigin.EXTERNAL)
        return record

    async def _insert(self, images: Sequence[NewImage], origin: ResourceOrigin) -> list[ImageRecord]:
        if not images:
            return []
        rows = await self._pool.fetch(
            Q.insert_images,
            [image.name for image in images],
            [image.job_id for image in images],
            [image.position for image in images],
            [image.width for image in images],
            [image.height for image in images],
            [image.category.value for image in images],
            [image.is_intermediate for image in images],
            [json.dumps(image.metadata) for image in images],
            [image.storage_key for image in images],
            [image.thumbnail_key for image in images],
            [origin.value] * len(images),
            [image.board_id for image in images],
            [image.session_id for image in images],
            [image.node_id for image in images],
            [image.has_workflow for image in images],
            [image.owner for image in images],
        )
        return [_image(row) for row in rows]

    async def get(self, name: str) -> ImageRecord:
        """One image; raise ImageNotFound."""
        row = await self._pool.fetchrow(Q.get_image, name)
        if row is None:
            raise ImageNotFound(f"No image {name}")
        return _image(row)

    async def list_images(self, query: ImageQuery, *, offset: int, limit: int) -> ImagePage:
        """One page of matching images (limit 0: only the total); both in one snapshot."""
        filters = _filters(query)
        async with self._pool.acquire() as connection, connection.transaction(isolation="repeatable_read"):
            total: int = await connection.fetchval(Q.count_images, *filters)
            rows = []
            if limit > 0 and offset < total:
                sql = _LIST_IMAGES[(query.order_dir, query.starred_first)]
                rows = await connection.fetch(sql, *filters, limit, offset)
        return ImagePage(items=[_image(row) for row in rows], total=total)

    async def names(self, query: ImageQuery) -> ImageNames:
        """Every matching image name in order, with the starred and total counts."""
        rows = await self._pool.fetch(_IMAGE_NAMES[(query.order_dir, query.starred_first)], *_filters(query))
        starred = sum(1 for row in rows if row["starred"]) if query.starred_first else 0
        return ImageNames(image_names=[row["name"] for row in rows], starred_count=starred, total_count=len(rows))

    async def get_many(self, names: Sequence[str]) -> list[ImageRecord]:
        """The named images in request order; unknown names are skipped."""
        if not names:
            return []
        return [_image(row) for row in await self._pool.fetch(Q.get_images, list(names))]

    async def update(self, name: str, changes: ImageChanges) -> ImageRecord:
        """Apply the non-None changes; raise ImageNotFound."""
        row = await self._pool.fetchrow(
            Q.update_image,
            name,
            None if changes.image_category is None else changes.image_category.value,
            changes.session_id,
            changes.is_intermediate,
            changes.starred,
        )
        if row is None:
            raise ImageNotFound(f"No image {name}")
        return _image(row)

    async def delete(self, names: Sequence[str]) -> list[ImageRecord]:
        """Delete the named images (unknown names are skipped); return the deleted rows in request order."""
        if not names:
            return []
        rows = {row["name"]: _image(row) for row in await self._pool.fetch(Q.delete_images, _unique(names))}
        return [rows[name] for name in _unique(names) if name in rows]

    async def count_intermediates(self, owner: str | None = None) -> int:
        """How many intermediate images there are."""
        count: int = await self._pool.fetchval(Q.count_intermediates, owner)
        return count

    async def delete_intermediates(self, owner: str | None = None) -> list[ImageRecord]:
        """Delete every intermediate image; return the deleted rows."""
        return [_image(row) for row in await self._pool.fetch(Q.delete_intermediates, owner)]

    async def delete_uncategorized(self, owner: str | None = None) -> list[ImageRecord]:
        """Delete every image on no board; return the deleted rows."""
        return [_image(row) for row in await self._pool.fetch(Q.delete_uncategorized, owner)]

    async def set_starred(self, names: Sequence[str], starred: bool) -> list[ImageRecord]:
        """Star or unstar the named images; return the updated rows in request order."""
        if not names:
            return []
        return [_image(row) for row in await self._pool.fetch(Q.set_starred, _unique(names), starred)]

    # Boards

    async def create_board(self, board_name: str, *, is_private: bool = False, owner: str = "admin") -> Board:
        """A new, empty board."""
        board_id = str(uuid.uuid4())
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(Q.insert_board, board_id, board_name, is_private, owner)
            row = await connection.fetchrow(Q.get_board, board_id)
        assert row is not None
        return _board(row)

    async def get_board(self, board_id: str) -> Board:
        """One board with its cover and counts; raise BoardNotFound."""
        row = await self._pool.fetchrow(Q.get_board, board_id)
        if row is None:
            raise BoardNotFound()
        return _board(row)

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
        """Boards in order (limit None: all of them) and the total, in one snapshot."""
        async with self._pool.acquire() as connection, connection.transaction(isolation="repeatable_read"):
            total: int = await connection.fetchval(Q.count_boards, include_archived, owner)
            rows = []
            if limit != 0:
                sql = _LIST_BOARDS[(order_by, direction)]
                rows = await connection.fetch(sql, include_archived, owner, limit, offset)
        return BoardPage(items=[_board(row) for row in rows], total=total)

    async def update_board(self, board_id: str, changes: BoardChanges) -> Board:
        """Apply the non-None changes; raise BoardNotFound."""
        async with self._pool.acquire() as connection, connection.transaction():
            updated = await connection.fetchval(Q.update_board, board_id, changes.board_name, changes.archived)
            if updated is None:
                raise BoardNotFound()
            row = await connection.fetchrow(Q.get_board, board_id)
        assert row is not None
        return _board(row)

    async def delete_board(self, board_id: str, *, include_images: bool) -> list[ImageRecord]:
        """Delete a board (a missing one is not an error); its images are deleted too when include_images,
        else taken off it. Return the images that were on it."""
        async with self._pool.acquire() as connection, connection.transaction():
            statement = Q.delete_board_images if include_images else Q.unboard_images
            rows = await connection.fetch(statement, board_id)
            await connection.execute(Q.delete_board, board_id)
        return [_image(row) for row in rows]

    async def move_images(self, names: Sequence[str], board_id: str | None) -> list[BoardMove]:
        """Put the named images on a board (None: on no board); unknown names are skipped.
        Raise BoardNotFound when board_id names no board."""
        if not names:
            if board_id is not None:
                await self.get_board(board_id)
            return []
        async with self._pool.acquire() as connection, connection.transaction():
            if board_id is not None and await connection.fetchval(Q.lock_board, board_id) is None:
                raise BoardNotFound()
            rows = await connection.fetch(Q.move_images, _unique(names), board_id)
        return [BoardMove(image_name=row["image_name"], old_board_id=row["old_board_id"]) for row in rows]
