"""InvokeAI model installs: `/api/v2/models/install...`, `/hugging_face`, `/hf_login` (reference §2.6).

The other `/api/v2/models` routes are in models.py; this router is included first so `/install/...` is never
taken for something else.
"""

from __future__ import annotations

import html
import logging
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import HTMLResponse

from serve_app.api.deps import AdminDep, InstallsDep, ModelsDep
from serve_app.api.errors import HttpError
from serve_app.api.invokeai.model_install_schemas import HfLogin, HuggingFaceModels, ModelInstallJobOut
from serve_app.domain.errors import Conflict, InvalidRequest, ModelNotFound, NotFound
from serve_app.domain.model_jobs import InstallJob
from serve_app.domain.models import ModelChanges
from serve_app.services.model_configs import ModelConfigBase, to_config
from serve_app.services.models import ModelService

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v2/models", tags=["model_manager"])

HFTokenStatus = Literal["valid", "invalid", "unknown"]


async def _config_out(models: ModelService, job: InstallJob) -> ModelConfigBase | None:
    if job.config_out_key is None:
        return None
    try:
        return to_config(await models.get(job.config_out_key))
    except (ModelNotFound, ValueError):  # removed since, or a type InvokeAI cannot show
        return None


async def _out(models: ModelService, job: InstallJob) -> ModelInstallJobOut:
    return ModelInstallJobOut.from_domain(job, await _config_out(models, job))


def _no_job(job_id: int) -> str:
    return f"No job with id {job_id} known"


@router.post(
    "/install",
    operation_id="install_model",
    dependencies=[AdminDep],
    status_code=201,
    response_model=ModelInstallJobOut,
)
async def install_model(
    installs: InstallsDep,
    models: ModelsDep,
    config: Annotated[ModelChanges, Body(description="Fields that override the probed ones (send {} for none)")],
    source: Annotated[str, Query(description="Model source to install: a local path, repo_id, or remote URL")],
    inplace: Annotated[bool | None, Query(description="Install a local model in place")] = False,
    access_token: Annotated[str | None, Query(description="access token for the remote resource")] = None,
) -> ModelInstallJobOut:
    """Start installing a model in the background; follow it with `GET /install/{id}` or the socket events."""
    job = await installs.install(source, inplace=bool(inplace), access_token=access_token, config_in=config)
    return await _out(models, job)


@router.get("/install", operation_id="list_model_installs", response_model=list[ModelInstallJobOut])
async def list_model_installs(installs: InstallsDep, models: ModelsDep) -> list[ModelInstallJobOut]:
    """Every install job, oldest first."""
    return [await _out(models, job) for job in await installs.list()]


@router.delete(
    "/install",
    operation_id="prune_model_install_jobs",
    dependencies=[AdminDep],
    status_code=204,
    response_class=Response,
)
async def prune_model_install_jobs(installs: InstallsDep) -> Response:
    """Forget completed, failed and cancelled installs."""
    await installs.prune()
    return Response(status_code=204)


@router.get(
    "/install/huggingface",
    operation_id="install_hugging_face_model",
    dependencies=[AdminDep],
    status_code=201,
    response_class=HTMLResponse,
    responses={400: {"description": "Bad request"}, 409: {"description": "Already installed"}},
)
async def install_hugging_face_model(
    installs: InstallsDep, source: Annotated[str, Query(description="HuggingFace repo_id to install")]
) -> HTMLResponse:
    """A page for browser deep links: starts installing a Hugging Face repo and says so."""
    try:
        urls, is_diffusers = await installs.hugging_face(source)
    except InvalidRequest:
        return _page(400, "Unable to Install Model", "No HuggingFace repository found with that repo ID.", source)
    try:
        if is_diffusers:
            await installs.install(source)
        elif urls is not None and len(urls) == 1:
            await installs.install(urls[0])
        else:
            message = "This HuggingFace repo has multiple models. Please use the Model Manager to install one."
            return _page(200, "Unable to Install Model", message, source)
    except Conflict:
        return _page(409, "Unable to Install Model", "This model is already installed.", source)
    except Exception:
        log.exception("could not start installing %s", source)
        return _page(500, "Unable to Install Model", "There was a problem installing this model.", source)
    message = "Your HuggingFace model is installing now. You can close this tab and follow it in the Model Manager."
    return _page(201, "Model Install Started", message, source)


def _page(status: int, title: str, message: str, repo_id: str) -> HTMLResponse:
    heading = "error" if status >= 400 or status == 200 else "ok"
    body = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>"
        f'<h2 class="{heading}">{html.escape(title)}</h2><p>{html.escape(message)}</p>'
        f"<p>Repo ID: {html.escape(repo_id)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)


@router.get(
    "/install/{id}",
    operation_id="get_model_install_job",
    response_model=ModelInstallJobOut,
    responses={404: {"description": "No such job"}},
)
async def get_model_install_job(installs: InstallsDep, models: ModelsDep, id: int) -> ModelInstallJobOut:
    """One install job."""
    try:
        job = await installs.get(id)
    except NotFound:
        raise HttpError(404, _no_job(id)) from None
    return await _out(models, job)


@router.delete(
    "/install/{id}",
    operation_id="cancel_model_install_job",
    dependencies=[AdminDep],
    status_code=201,
    responses={415: {"description": "No such job"}},
)
async def cancel_model_install_job(installs: InstallsDep, id: int) -> None:
    """Cancel an install; 415 for an unknown id, as InvokeAI answers."""
    try:
        await installs.cancel(id)
    except NotFound:
        raise HttpError(415, _no_job(id)) from None


@router.get(
    "/hugging_face",
    operation_id="get_hugging_face_models",
    response_model=HuggingFaceModels,
    responses={400: {"description": "Invalid hugging face repo"}},
)
async def get_hugging_face_models(
    installs: InstallsDep,
    hugging_face_repo: Annotated[str | None, Query(description="Hugging face repo to search for models")] = None,
) -> HuggingFaceModels:
    """Whether a repo is a diffusers model, else the URLs of its checkpoint files."""
    if not hugging_face_repo:
        raise HttpError(400, "No HuggingFace repository found")
    try:
        urls, is_diffusers = await installs.hugging_face(hugging_face_repo)
    except InvalidRequest:
        raise HttpError(400, "No HuggingFace repository found") from None
    return HuggingFaceModels(urls=urls, is_diffusers=is_diffusers)


@router.get("/hf_login", operation_id="get_hf_login_status", response_model=HFTokenStatus)
async def get_hf_login_status(installs: InstallsDep) -> HFTokenStatus:
    """Whether the stored Hugging Face token works: valid, invalid (none, or refused) or unknown."""
    return cast(HFTokenStatus, await installs.hf_status())


@router.post("/hf_login", operation_id="do_hf_login", dependencies=[AdminDep], response_model=HFTokenStatus)
async def do_hf_login(installs: InstallsDep, body: HfLogin) -> HFTokenStatus:
    """Store a Hugging Face token (not when the hub refuses it) and say how it stands."""
    return cast(HFTokenStatus, await installs.hf_login(body.token))


@router.delete("/hf_login", operation_id="reset_hf_token", dependencies=[AdminDep], response_model=HFTokenStatus)
async def reset_hf_token(installs: InstallsDep) -> HFTokenStatus:
    """Forget the stored token."""
    return cast(HFTokenStatus, await installs.hf_logout())
