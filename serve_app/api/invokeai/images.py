"""InvokeAI's `/api/v1/images` routes (reference §2.4): upload, gallery queries, bytes, stars, deletes, downloads.

With auth on, a non-admin sees and changes only their own images (`ScopeDep`): others' are 404 or skipped, as
unknown names are. Admins see everyone's; with auth off every request is an admin.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Query, Response, UploadFile

from serve_app.api.deps import ContextDep, ImagesDep, OwnerDep, ScopeDep
from serve_app.api.errors import HttpError
from serve_app.api.invokeai.schemas_images import (
    DeleteImagesResult,
    DownloadBody,
    ImageDTO,
    ImageNamesBody,
    ImageNamesResult,
    ImageRecordChanges,
    ImagesDownloaded,
    ImageUrlsDTO,
    ImageWorkflowDTO,
    OffsetPaginatedResults,
    StarredImagesResult,
    UnstarredImagesResult,
    image_url,
    thumbnail_url,
)
from serve_app.domain.boards import ImageChanges, ImageQuery, SortDirection
from serve_app.domain.errors import NotFound
from serve_app.domain.images import ImageCategory, ResourceOrigin
from serve_app.services.images import ImageUpload

router = APIRouter(prefix="/api/v1/images", tags=["images"])

# Image bytes never change under a name: clients may cache them for a year.
_IMMUTABLE = "max-age=31536000"

T = TypeVar("T")


async def _or_404(pending: Awaitable[T]) -> T:
    """InvokeAI answers a bare `{"detail": "Not Found"}` for every missing image or download."""
    try:
        return await pending
    except NotFound:
        raise HttpError(404, "Not Found") from None


def _query(
    image_origin: ResourceOrigin | None,
    categories: list[ImageCategory] | None,
    is_intermediate: bool | None,
    board_id: str | None,
    order_dir: SortDirection,
    starred_first: bool,
    search_term: str | None,
) -> ImageQuery:
    return ImageQuery(
        image_origin=image_origin,
        categories=None if categories is None else tuple(categories),
        is_intermediate=is_intermediate,
        board_id=board_id,
        order_dir=order_dir,
        starred_first=starred_first,
        search_term=search_term,
    )


@router.post("/upload", operation_id="upload_image", status_code=201, response_model=ImageDTO)
async def upload_image(
    images: ImagesDep,
    owner: OwnerDep,
    scope: ScopeDep,
    context: ContextDep,
    response: Response,
    file: UploadFile,
    image_category: Annotated[ImageCategory, Query(description="The category of the image")],
    is_intermediate: Annotated[bool, Query(description="Whether this is an intermediate image")],
    board_id: Annotated[str | None, Query(description="The board to add this image to, if any")] = None,
    session_id: Annotated[str | None, Query(description="The session ID associated with this upload, if any")] = None,
    crop_visible: Annotated[bool | None, Query(description="Whether to crop the image")] = False,
    resize_to: Annotated[str | None, Form(description='JSON {"width": W, "height": H}')] = None,
    metadata: Annotated[str | None, Form(description="The metadata to associate with the image, a JSON dict")] = None,
) -> ImageDTO:
    if board_id is not None and scope is not None and context.boards is not None:
        # Onto one's own boards only; another user's board does not exist for them.
        await _or_404(context.boards.get(board_id, owner=scope))
    upload = ImageUpload(
        data=await file.read(),
        content_type=file.content_type,
        category=image_category,
        is_intermediate=is_intermediate,
        board_id=board_id,
        session_id=session_id,
        crop_visible=bool(crop_visible),
        resize_to=resize_to,
        metadata=metadata,
    )
    dto = ImageDTO.of(await images.upload(upload, owner=owner))
    response.headers["Location"] = dto.image_url
    return dto


@router.post("/", operation_id="create_image_upload_entry", status_code=501)
async def create_image_upload_entry() -> None:
    raise HttpError(501, "Not implemented")


@router.get("/", operation_id="list_image_dtos", response_model=OffsetPaginatedResults[ImageDTO])
async def list_image_dtos(
    images: ImagesDep,
    scope: ScopeDep,
    image_origin: ResourceOrigin | None = None,
    categories: Annotated[list[ImageCategory] | None, Query()] = None,
    is_intermediate: bool | None = None,
    board_id: Annotated[str | None, Query(description="A board id, or 'none' for images on no board")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=0)] = 10,
    order_dir: SortDirection = SortDirection.DESC,
    starred_first: bool = True,
    search_term: str | None = None,
) -> OffsetPaginatedResults[ImageDTO]:
    query = _query(image_origin, categories, is_intermediate, board_id, order_dir, starred_first, search_term)
    page = await images.list_images(query, offset=offset, limit=limit, owner=scope)
    return OffsetPaginatedResults[ImageDTO](
        limit=limit, offset=offset, total=page.total, items=[ImageDTO.of(record) for record in page.items]
    )


@router.get("/names", operation_id="get_image_names", response_model=ImageNamesResult)
async def get_image_names(
    images: ImagesDep,
    scope: ScopeDep,
    image_origin: ResourceOrigin | None = None,
    categories: Annotated[list[ImageCategory] | None, Query()] = None,
    is_intermediate: bool | None = None,
    board_id: Annotated[str | None, Query(description="A board id, or 'none' for images on no board")] = None,
    order_dir: SortDirection = SortDirection.DESC,
    starred_first: bool = True,
    search_term: str | None = None,
) -> ImageNamesResult:
    query = _query(image_origin, categories, is_intermediate, board_id, order_dir, starred_first, search_term)
    names = await images.names(query, owner=scope)
    return ImageNamesResult(
        image_names=names.image_names, starred_count=names.starred_count, total_count=names.total_count
    )


@router.post("/images_by_names", operation_id="get_images_by_names", response_model=list[ImageDTO])
async def get_images_by_names(images: ImagesDep, scope: ScopeDep, body: ImageNamesBody) -> list[ImageDTO]:
    return [ImageDTO.of(record) for record in await images.get_many(body.image_names, owner=scope)]


@router.get("/intermediates", operation_id="get_intermediates_count", response_model=int)
async def get_intermediates_count(images: ImagesDep, scope: ScopeDep) -> int:
    return await images.count_intermediates(owner=scope)


@router.delete("/intermediates", operation_id="clear_intermediates", response_model=int)
async def clear_intermediates(images: ImagesDep, scope: ScopeDep) -> int:
    return await images.delete_intermediates(owner=scope)


@router.delete("/uncategorized", operation_id="delete_uncategorized_images", response_model=DeleteImagesResult)
async def delete_uncategorized_images(images: ImagesDep, scope: ScopeDep) -> DeleteImagesResult:
    return DeleteImagesResult.of(await images.delete_uncategorized(owner=scope))


@router.post("/delete", operation_id="delete_images_from_list", response_model=DeleteImagesResult)
async def delete_images_from_list(images: ImagesDep, scope: ScopeDep, body: ImageNamesBody) -> DeleteImagesResult:
    return DeleteImagesResult.of(await images.delete(body.image_names, owner=scope))


@router.post("/star", operation_id="star_images_in_list", response_model=StarredImagesResult)
async def star_images_in_list(images: ImagesDep, scope: ScopeDep, body: ImageNamesBody) -> StarredImagesResult:
    changed = await images.star(body.image_names, True, owner=scope)
    return StarredImagesResult(affected_boards=changed.affected_boards, starred_images=changed.images)


@router.post("/unstar", operation_id="unstar_images_in_list", response_model=UnstarredImagesResult)
async def unstar_images_in_list(images: ImagesDep, scope: ScopeDep, body: ImageNamesBody) -> UnstarredImagesResult:
    changed = await images.star(body.image_names, False, owner=scope)
    return UnstarredImagesResult(affected_boards=changed.affected_boards, unstarred_images=changed.images)


@router.post("/download", operation_id="download_images_from_list", status_code=202, response_model=ImagesDownloaded)
async def download_images_from_list(
    images: ImagesDep, scope: ScopeDep, requester: OwnerDep, body: DownloadBody
) -> ImagesDownloaded:
    item_name = await images.start_download(body.image_names, body.board_id, owner=scope, requester=requester)
    return ImagesDownloaded(response=None, bulk_download_item_name=item_name)


@router.get(
    "/download/{bulk_download_item_name}",
    operation_id="get_bulk_download_item",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, 404: {}},
)
async def get_bulk_download_item(images: ImagesDep, bulk_download_item_name: str) -> Response:
    data = await _or_404(images.take_download(bulk_download_item_name))
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{bulk_download_item_name}"'},
    )


@router.get("/i/{image_name}", operation_id="get_image_dto", response_model=ImageDTO)
async def get_image_dto(images: ImagesDep, scope: ScopeDep, image_name: str) -> ImageDTO:
    return ImageDTO.of(await _or_404(images.get(image_name, owner=scope)))


@router.patch("/i/{image_name}", operation_id="update_image", response_model=ImageDTO)
async def update_image(
    images: ImagesDep, scope: ScopeDep, image_name: str, image_changes: ImageRecordChanges
) -> ImageDTO:
    changes = ImageChanges(
        image_category=image_changes.image_category,
        session_id=image_changes.session_id,
        is_intermediate=image_changes.is_intermediate,
        starred=image_changes.starred,
    )
    try:
        return ImageDTO.of(await images.update(image_name, changes, owner=scope))
    except NotFound:
        raise HttpError(400, "Failed to update image") from None


@router.delete("/i/{image_name}", operation_id="delete_image", response_model=DeleteImagesResult)
async def delete_image(images: ImagesDep, scope: ScopeDep, image_name: str) -> DeleteImagesResult:
    return DeleteImagesResult.of(await images.delete([image_name], owner=scope))


@router.get("/i/{image_name}/metadata", operation_id="get_image_metadata", response_model=dict[str, Any] | None)
async def get_image_metadata(images: ImagesDep, scope: ScopeDep, image_name: str) -> dict[str, Any] | None:
    return await _or_404(images.metadata(image_name, owner=scope))


@router.get("/i/{image_name}/workflow", operation_id="get_image_workflow", response_model=ImageWorkflowDTO)
async def get_image_workflow(images: ImagesDep, scope: ScopeDep, image_name: str) -> ImageWorkflowDTO:
    found = await _or_404(images.workflow(image_name, owner=scope))
    return ImageWorkflowDTO(workflow=found.workflow, graph=found.graph)


def _image_headers(filename: str) -> dict[str, str]:
    return {"Cache-Control": _IMMUTABLE, "Content-Disposition": f'inline; filename="{filename}"'}


_PNG_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}}, 404: {}}


@router.get("/i/{image_name}/full", operation_id="get_image_full", response_class=Response, responses=_PNG_RESPONSES)
async def get_image_full(images: ImagesDep, scope: ScopeDep, image_name: str) -> Response:
    data = await _or_404(images.full(image_name, owner=scope))
    return Response(data, media_type="image/png", headers=_image_headers(image_name))


@router.head(
    "/i/{image_name}/full", operation_id="get_image_full_head", response_class=Response, responses=_PNG_RESPONSES
)
async def get_image_full_head(images: ImagesDep, scope: ScopeDep, image_name: str) -> Response:
    await _or_404(images.get(image_name, owner=scope))
    return Response(media_type="image/png", headers=_image_headers(image_name))


@router.get(
    "/i/{image_name}/thumbnail",
    operation_id="get_image_thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/webp": {}}}, 404: {}},
)
async def get_image_thumbnail(images: ImagesDep, scope: ScopeDep, image_name: str) -> Response:
    data = await _or_404(images.thumbnail(image_name, owner=scope))
    stem = image_name.rsplit(".", 1)[0]
    return Response(data, media_type="image/webp", headers=_image_headers(f"{stem}.webp"))


@router.get("/i/{image_name}/urls", operation_id="get_image_urls", response_model=ImageUrlsDTO)
async def get_image_urls(images: ImagesDep, scope: ScopeDep, image_name: str) -> ImageUrlsDTO:
    record = await _or_404(images.get(image_name, owner=scope))
    return ImageUrlsDTO(
        image_name=record.name, image_url=image_url(record.name), thumbnail_url=thumbnail_url(record.name)
    )
