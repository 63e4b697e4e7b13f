"""InvokeAI's download queue: `/api/v1/download_queue` (reference §2.8)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serve_app.api.deps import AdminDep, DownloadsDep, OwnerDep
from serve_app.api.errors import HttpError
from serve_app.api.invokeai.model_install_schemas import DownloadJobOut, DownloadRequest
from serve_app.domain.errors import NotFound

router = APIRouter(prefix="/api/v1/download_queue", tags=["download_queue"])

UNKNOWN_JOB = "Unrecognized job"


@router.get("/", operation_id="list_downloads", response_model=list[DownloadJobOut])
async def list_downloads(downloads: DownloadsDep) -> list[DownloadJobOut]:
    """Every download, running or not (install parts included), oldest first."""
    return [DownloadJobOut.from_domain(job) for job in await downloads.list()]


@router.patch("/", operation_id="prune_downloads", dependencies=[AdminDep], status_code=204, response_class=Response)
async def prune_downloads(downloads: DownloadsDep) -> Response:
    """Forget completed, failed and cancelled downloads."""
    await downloads.prune()
    return Response(status_code=204)


@router.post("/i/", operation_id="download", dependencies=[AdminDep], response_model=DownloadJobOut)
async def download(downloads: DownloadsDep, owner: OwnerDep, body: DownloadRequest) -> DownloadJobOut:
    """Download `source` into `dest` (a folder, or a file path named like a model file; inside the models
    folder; a relative one is taken from there) in the background."""
    job = await downloads.download(
        body.source,
        body.dest,
        priority=body.priority,
        access_token=body.access_token,
        owner=owner,
        dest_may_be_file=True,  # InvokeAI's `dest` is "a directory or file path"
    )
    return DownloadJobOut.from_domain(job)


@router.get(
    "/i/{id}", operation_id="get_download_job", response_model=DownloadJobOut, responses={404: {"description": ""}}
)
async def get_download_job(downloads: DownloadsDep, id: int) -> DownloadJobOut:
    """One download."""
    try:
        return DownloadJobOut.from_domain(await downloads.get(id))
    except NotFound:
        raise HttpError(404, UNKNOWN_JOB) from None


@router.delete(
    "/i/{id}", operation_id="cancel_download_job", dependencies=[AdminDep], status_code=204, response_class=Response
)
async def cancel_download_job(downloads: DownloadsDep, id: int) -> Response:
    """Cancel a download (a finished one stays as it is)."""
    try:
        await downloads.cancel(id)
    except NotFound:
        raise HttpError(404, UNKNOWN_JOB) from None
    return Response(status_code=204)


@router.delete(
    "/i", operation_id="cancel_all_download_jobs", dependencies=[AdminDep], status_code=204, response_class=Response
)
async def cancel_all_download_jobs(downloads: DownloadsDep) -> Response:
    """Cancel every unfinished download."""
    await downloads.cancel_all()
    return Response(status_code=204)
