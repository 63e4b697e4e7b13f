"""InvokeAI's `/api/v1/boards` and `/api/v1/board_images` routes (reference §2.5).

With auth on, a non-admin sees and changes only their own boards (another's is 404) and moves only their own
images (others' are skipped like unknown names). Admins see everything; with auth off every request is an admin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from serve_app.api.deps import BoardsDep, OwnerDep, ScopeDep
from serve_app.api.errors import HttpError
from serve_app.api.invokeai.schemas_images import (
    AddImagesToBoardBody,
    AddImagesToBoardResult,
    AddImageToBoardBody,
    BoardChanges,
    BoardDTO,
    DeleteBoardResult,
    ImageNamesBody,
    OffsetPaginatedResults,
    RemoveImageFromBoardBody,
    RemoveImagesFromBoardResult,
)
from serve_app.domain.boards import BoardChanges as BoardUpdate
from serve_app.domain.boards import BoardOrderBy, SortDirection
from serve_app.domain.errors import ImageNotFound
from serve_app.domain.images import ImageCategory

boards_router = APIRouter(prefix="/api/v1/boards", tags=["boards"])
board_images_router = APIRouter(prefix="/api/v1/board_images", tags=["boards"])


@boards_router.post("/", operation_id="create_board", status_code=201, response_model=BoardDTO)
async def create_board(
    boards: BoardsDep,
    owner: OwnerDep,
    board_name: Annotated[str, Query(max_length=300, description="The name of the board to create")],
    is_private: Annotated[bool, Query(description="Whether the board is private")] = False,
) -> BoardDTO:
    return BoardDTO.of(await boards.create(board_name, is_private=is_private, owner=owner), with_private=False)


@boards_router.get("/", operation_id="list_boards", response_model=list[BoardDTO] | OffsetPaginatedResults[BoardDTO])
async def list_boards(
    boards: BoardsDep,
    scope: ScopeDep,
    order_by: BoardOrderBy = BoardOrderBy.CREATED_AT,
    direction: SortDirection = SortDirection.DESC,
    all: bool | None = None,  # noqa: A002 - InvokeAI's query parameter name
    offset: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int | None, Query(ge=0)] = None,
    include_archived: bool = False,
) -> list[BoardDTO] | OffsetPaginatedResults[BoardDTO]:
    if all:
        page = await boards.list_boards(
            order_by=order_by, direction=direction, include_archived=include_archived, owner=scope
        )
        return [BoardDTO.of(board) for board in page.items]
    if offset is not None and limit is not None:
        page = await boards.list_boards(
            order_by=order_by,
            direction=direction,
            include_archived=include_archived,
            offset=offset,
            limit=limit,
            owner=scope,
        )
        return OffsetPaginatedResults[BoardDTO](
            limit=limit, offset=offset, total=page.total, items=[BoardDTO.of(board) for board in page.items]
        )
    raise HttpError(400, "Invalid request: Must provide either 'all' or both 'offset' and 'limit'")


@boards_router.get("/{board_id}", operation_id="get_board", response_model=BoardDTO)
async def get_board(boards: BoardsDep, scope: ScopeDep, board_id: str) -> BoardDTO:
    return BoardDTO.of(await boards.get(board_id, owner=scope), with_private=False)


@boards_router.patch("/{board_id}", operation_id="update_board", status_code=201, response_model=BoardDTO)
async def update_board(boards: BoardsDep, scope: ScopeDep, board_id: str, changes: BoardChanges) -> BoardDTO:
    board = await boards.update(
        board_id,
        BoardUpdate(
            board_name=changes.board_name, cover_image_name=changes.cover_image_name, archived=changes.archived
        ),
        owner=scope,
    )
    return BoardDTO.of(board, with_private=False)


@boards_router.delete("/{board_id}", operation_id="delete_board", response_model=DeleteBoardResult)
async def delete_board(
    boards: BoardsDep, scope: ScopeDep, board_id: str, include_images: bool | None = False
) -> DeleteBoardResult:
    deleted = await boards.delete(board_id, include_images=bool(include_images), owner=scope)
    return DeleteBoardResult(
        board_id=deleted.board_id,
        deleted_board_images=deleted.deleted_board_images,
        deleted_images=deleted.deleted_images,
    )


@boards_router.get("/{board_id}/image_names", operation_id="list_all_board_image_names", response_model=list[str])
async def list_all_board_image_names(
    boards: BoardsDep,
    scope: ScopeDep,
    board_id: str,
    categories: Annotated[list[ImageCategory] | None, Query()] = None,
    is_intermediate: bool | None = None,
) -> list[str]:
    return await boards.image_names(board_id, categories=categories, is_intermediate=is_intermediate, owner=scope)


@board_images_router.post(
    "/", operation_id="add_image_to_board", status_code=201, response_model=AddImagesToBoardResult
)
async def add_image_to_board(boards: BoardsDep, scope: ScopeDep, body: AddImageToBoardBody) -> AddImagesToBoardResult:
    try:
        return AddImagesToBoardResult.of(await boards.add_image(body.board_id, body.image_name, owner=scope))
    except ImageNotFound:
        raise HttpError(404, "Not Found") from None


@board_images_router.delete(
    "/", operation_id="remove_image_from_board", status_code=201, response_model=RemoveImagesFromBoardResult
)
async def remove_image_from_board(
    boards: BoardsDep, scope: ScopeDep, body: RemoveImageFromBoardBody
) -> RemoveImagesFromBoardResult:
    try:
        return RemoveImagesFromBoardResult.of(await boards.remove_image(body.image_name, owner=scope))
    except ImageNotFound:
        raise HttpError(404, "Not Found") from None


@board_images_router.post(
    "/batch", operation_id="add_images_to_board", status_code=201, response_model=AddImagesToBoardResult
)
async def add_images_to_board(boards: BoardsDep, scope: ScopeDep, body: AddImagesToBoardBody) -> AddImagesToBoardResult:
    return AddImagesToBoardResult.of(await boards.add_images(body.board_id, body.image_names, owner=scope))


@board_images_router.post(
    "/batch/delete",
    operation_id="remove_images_from_board",
    status_code=201,
    response_model=RemoveImagesFromBoardResult,
)
async def remove_images_from_board(
    boards: BoardsDep, scope: ScopeDep, body: ImageNamesBody
) -> RemoveImagesFromBoardResult:
    return RemoveImagesFromBoardResult.of(await boards.remove_images(body.image_names, owner=scope))
