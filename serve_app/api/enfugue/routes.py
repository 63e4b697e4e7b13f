"""Enfugue routes: `/api`, `/api/invoke`, `/api/invocation...` in Enfugue's envelopes."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from serve_app.api.deps import ContextDep, IdentityDep, JobsDep, OwnerDep, StoreDep
from serve_app.api.enfugue.schemas import UNSUPPORTED_KEYS, InvokeBody, describe_errors, invocation_status
from serve_app.api.errors import ENFUGUE_MEDIA_TYPE, HttpError
from serve_app.domain.errors import InvalidRequest, JobNotFound
from serve_app.domain.images import image_key, thumbnail_key
from serve_app.domain.jobs import Job, JobStatus
from serve_app.domain.model_jobs import DownloadStatus
from serve_app.domain.ports import ObjectStore
from serve_app.services.enfugue_images import input_keys, prepare_inputs
from serve_app.services.enfugue_intermediates import existing_intermediates, intermediate_key, intermediate_keys
from serve_app.services.jobs import JobGateway

router = APIRouter(prefix="/api", tags=["enfugue"])

# Result files are named `<32-hex job uuid>_<index>.png`; anything else is not ours to serve.
_IMAGE_FILE = re.compile(r"^[0-9a-f]{32}_[0-9]{1,4}\.png$")
_IMMUTABLE = "public, max-age=31536000, immutable"
_PAGE = 500


def envelope(request: Request, data: Any, **meta: Any) -> JSONResponse:
    """Enfugue's success envelope: query params as lists under meta.params (enfugue-api.md §1.2), plus any
    extra `meta` (the REST listings' `count`)."""
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return JSONResponse({"meta": {"params": params, **meta}, "data": data}, media_type=ENFUGUE_MEDIA_TYPE)


def _parse_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise JobNotFound(f"No invocation {value}") from None


async def _own_job(jobs: JobGateway, uid: str, owner: str) -> Job:
    """The caller's job; another user's is "not found", so its existence is not revealed (as Enfugue, whose
    lookups go through the caller's own invocations)."""
    job = await jobs.get(_parse_uuid(uid))
    if job.owner != owner:
        raise JobNotFound(f"No invocation {uid}")
    return job


@router.get("", summary="Server status")
@router.get("/", include_in_schema=False)
async def status(request: Request, context: ContextDep, jobs: JobsDep) -> JSONResponse:
    counts = await jobs.counts()
    active = counts.get(JobStatus.IN_PROGRESS, 0)
    queued = counts.get(JobStatus.PENDING, 0)
    downloads = await context.downloads.list() if context.downloads is not None else []
    running = sum(1 for job in downloads if job.status is DownloadStatus.RUNNING)
    waiting = sum(1 for job in downloads if job.status is DownloadStatus.WAITING)
    data = {
        "status": "busy" if active else "ready",
        "system": {
            "downloads": {"active": running, "queued": waiting, "total": running + waiting},
            "invocations": {"active": bool(active), "queued": queued, "total": active + queued},
        },
        "gpu": None,
        "version": context.version,
        "uptime": (datetime.now(UTC) - context.started_at).total_seconds(),
    }
    return envelope(request, data)


@router.post("/invoke", summary="Submit a generation")
async def invoke(request: Request, jobs: JobsDep, store: StoreDep, owner: OwnerDep) -> JSONResponse:
    body = await json_object(request)
    unsupported = [key for key in UNSUPPORTED_KEYS if body.get(key) not in (None, [], "", False)]
    if unsupported:
        raise HttpError(501, f"Not supported by this server yet: {', '.join(unsupported)}")
    try:
        parsed = InvokeBody.model_validate(body)
        generation = parsed.to_domain()
    except ValidationError as exc:
        raise InvalidRequest(describe_errors(exc)) from None
    # Inline images are decoded and checked before anything is stored, then stored for the replica to load.
    prepared = await prepare_inputs(generation, parsed.image_inputs(), store)
    try:
        # Models are resolved where the registry is (the Queue): an unknown preset is 404 "Unknown diffusion
        # model X", an unknown checkpoint, LoRA, VAE or inversion 400 "Cannot find or access X".
        job = await jobs.submit_generation(prepared.request, owner=owner)
    except BaseException:
        await store.delete(prepared.keys)
        raise
    return envelope(request, invocation_status(job))


@router.get("/invocation", summary="This user's invocations")
async def list_invocations(request: Request, jobs: JobsDep, store: StoreDep, owner: OwnerDep) -> JSONResponse:
    items = await jobs.list_jobs(owner=owner, limit=100)
    return envelope(request, [await _status(job, store) for job in items])


@router.post("/invocation/stop", summary="Stop running invocations")
async def stop_invocations(request: Request, jobs: JobsDep, identity: IdentityDep) -> JSONResponse:
    """Enfugue stops its one engine, whoever started the job; here an engine is shared, so this cancels the
    caller's running invocations (an admin's: everyone's). Queued ones still run, as in Enfugue."""
    owner = None if identity.admin else identity.username
    running: list[Job] = []
    offset = 0
    while page := await jobs.list_jobs(owner=owner, limit=_PAGE, offset=offset):
        running += [job for job in page if job.status is JobStatus.IN_PROGRESS and job.origin == "enfugue"]
        offset += len(page)
    for job in running:
        await jobs.cancel(job.id)
    return envelope(request, None)


@router.get("/invocation/images/{file}", summary="A result PNG", response_class=Response)
async def image_file(file: str, store: StoreDep) -> Response:
    if not _IMAGE_FILE.match(file):
        raise HttpError(404, f"No image {file}")
    return Response(await store.get(image_key(file)), media_type="image/png", headers={"Cache-Control": _IMMUTABLE})


@router.get(
    "/invocation/intermediates/{file}", summary="A preview PNG of a running invocation", response_class=Response
)
async def intermediate_file(file: str, store: StoreDep) -> Response:
    if not _IMAGE_FILE.match(file):
        raise HttpError(404, f"No image {file}")
    # Overwritten while the job runs: never cached.
    return Response(
        await store.get(intermediate_key(file)), media_type="image/png", headers={"Cache-Control": "no-store"}
    )


@router.get("/invocation/thumbnails/{file}", summary="A result thumbnail (WebP)", response_class=Response)
async def thumbnail_file(file: str, store: StoreDep) -> Response:
    if not _IMAGE_FILE.match(file):
        raise HttpError(404, f"No image {file}")
    data = await store.get(thumbnail_key(file))
    return Response(data, media_type="image/webp", headers={"Cache-Control": _IMMUTABLE})


@router.get("/invocation/{uid}", summary="One invocation's status")
async def get_invocation(request: Request, uid: str, jobs: JobsDep, store: StoreDep, owner: OwnerDep) -> JSONResponse:
    return envelope(request, await _status(await _own_job(jobs, uid, owner), store))


@router.delete("/invocation/{uid}", summary="Delete an invocation and its images (cancels it first)")
async def delete_invocation(
    request: Request, uid: str, jobs: JobsDep, store: StoreDep, owner: OwnerDep
) -> JSONResponse:
    job = await _own_job(jobs, uid, owner)
    await jobs.delete(job.id)
    # Its previews and inline inputs too (Enfugue deletes `images/{uuid}*` and `intermediates/{uuid}*`).
    await store.delete(intermediate_keys(job.id, job.request) + input_keys(job.request))
    return envelope(request, None)


@router.post("/invocation/{uid}/cancel", summary="Cancel one invocation (serve-app extension)")
async def cancel_invocation(request: Request, uid: str, jobs: JobsDep, owner: OwnerDep) -> JSONResponse:
    return envelope(request, invocation_status(await jobs.cancel((await _own_job(jobs, uid, owner)).id)))


async def _status(job: Job, store: ObjectStore) -> dict[str, Any]:
    """The status object; a running job lists the previews stored so far."""
    if job.status is not JobStatus.IN_PROGRESS:
        return invocation_status(job)
    return invocation_status(job, intermediates=await existing_intermediates(store, job.id, job.request))


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    return body
