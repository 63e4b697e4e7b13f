"""Enfugue's downloads: `POST/GET /api/download`, `POST /api/download/cancel` (enfugue-api.md §10.3).

Files go into the models folder by `type`: checkpoint → the folder itself, lora → loras/, lycoris → lycoris/,
inversion → embeddings/. Unlike Enfugue, a server that sends no Content-Length is accepted (`total` stays 0 until
the file is complete); failing such downloads protects nothing, and plenty of file hosts stream without one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serve_app.api.deps import AdminDep, DownloadsDep, ModelsDep, OwnerDep
from serve_app.api.enfugue.routes import envelope, json_object
from serve_app.domain.errors import InvalidRequest
from serve_app.domain.model_jobs import DownloadJob, DownloadStatus
from serve_app.services.downloads import DownloadService

router = APIRouter(prefix="/api", tags=["enfugue"])

FOLDERS = {"checkpoint": "", "lora": "loras", "lycoris": "lycoris", "inversion": "embeddings"}
STATUSES = {
    DownloadStatus.WAITING: "queued",
    DownloadStatus.RUNNING: "downloading",
    DownloadStatus.COMPLETED: "complete",
    DownloadStatus.ERROR: "error",
    DownloadStatus.CANCELLED: "canceled",
}


def download_status(job: DownloadJob, *, now: datetime | None = None) -> dict[str, Any]:
    """Enfugue's download status object (`api/downloads.py:Download.format`)."""
    elapsed = 0.0
    if job.job_started is not None:
        elapsed = ((job.job_ended or now or datetime.now(UTC)) - job.job_started).total_seconds()
    destination = job.download_path or job.dest
    return {
        "id": f"{job.id:x}",
        "status": STATUSES.get(job.status, "unknown"),
        "source": job.source,
        "destination": destination,
        "filename": Path(job.download_path).name if job.download_path else None,
        "elapsed": max(elapsed, 0.0),
        "downloaded": job.bytes,
        "total": job.total_bytes,
    }


def _required(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise InvalidRequest(f"Missing required argument '{name}'", field=name)
    return str(value)


async def _active(downloads: DownloadService, url: str, owner: str | None = None) -> list[DownloadJob]:
    return [job for job in await downloads.list(owner) if job.source == url and not job.status.finished]


@router.post("/download", summary="Download a model file into the models folder", dependencies=[AdminDep])
async def start_download(request: Request, downloads: DownloadsDep, models: ModelsDep, owner: OwnerDep) -> JSONResponse:
    body = await json_object(request)
    kind, url, filename = _required(body, "type"), _required(body, "url"), _required(body, "filename")
    if kind not in FOLDERS:
        raise InvalidRequest(f"Unknown download type {kind}; use one of {', '.join(FOLDERS)}", field="type")
    # Enfugue joins the name onto its folder as given; a path here is an attempt to write elsewhere, so say no
    # (rather than quietly keeping only its last part).
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        raise InvalidRequest(f"Bad filename {filename}: a file name, not a path", field="filename")
    if await _active(downloads, url):
        raise InvalidRequest(f"Already downloading {url}", field="url")
    overwrite = body.get("overwrite") in (True, "true", "True", 1, "1", "yes")
    folder = models.models_dir / FOLDERS[kind]
    job = await downloads.download(url, folder, filename=filename, overwrite=overwrite, kind=kind, owner=owner)
    return envelope(request, download_status(job))


@router.get("/download", summary="This user's downloads")
async def list_downloads(request: Request, downloads: DownloadsDep, owner: OwnerDep) -> JSONResponse:
    jobs = [job for job in await downloads.list(owner) if job.kind is not None]
    return envelope(request, [download_status(job) for job in jobs])


@router.post("/download/cancel", summary="Cancel a download by its URL", dependencies=[AdminDep])
async def cancel_download(request: Request, downloads: DownloadsDep, owner: OwnerDep) -> JSONResponse:
    url = _required(await json_object(request), "url")
    active = await _active(downloads, url, owner)
    if not active:
        raise InvalidRequest(f"Not downloading {url}", field="url")
    cancelled = [await downloads.cancel(job.id) for job in active]
    return envelope(request, download_status(cancelled[0]))
