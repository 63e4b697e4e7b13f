"""FastAPI dependencies: the collaborators a route may use, as Annotated aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from serve_app.domain.errors import ServiceUnavailable
from serve_app.domain.ports import BusMessage, EventSource, JobChange, ObjectStore
from serve_app.services.boards import BoardGateway
from serve_app.services.images import ImageGateway
from serve_app.services.jobs import JobGateway
from serve_app.services.models import ModelService
from serve_app.services.session_queue import SessionQueueService

# Builds the Socket.IO events a job change means (e.g. `queue_item_status_changed`), reading what it needs.
StatusEvents = Callable[[JobChange], Awaitable[list[BusMessage]]]


@dataclass(frozen=True)
class ApiContext:
    """Everything the routers need, built once by the composition root."""

    jobs: JobGateway
    store: ObjectStore
    version: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Until accounts exist, every request acts as this built-in admin (as both peers do).
    default_owner: str = "admin"
    # The InvokeAI model manager routes (`/api/v2/models`); they answer 503 without it.
    models: ModelService | None = None
    # Job changes and bus messages for the Socket.IO server (`/ws/socket.io`, mounted when set), and the
    # hook that turns a job change into queue events (`/ws/socket.io` then only relays bus messages without it).
    events: EventSource | None = None
    status_events: StatusEvents | None = None
    # InvokeAI's session queue; None where this app instance serves only the Enfugue dialect.
    session_queue: SessionQueueService | None = None
    # InvokeAI's images and boards (`/api/v1/images`, `/boards`, `/board_images`); they answer 503 without them.
    images: ImageGateway | None = None
    boards: BoardGateway | None = None


def get_context(request: Request) -> ApiContext:
    context = request.app.state.context
    assert isinstance(context, ApiContext)
    return context


def get_jobs(request: Request) -> JobGateway:
    return get_context(request).jobs


def get_store(request: Request) -> ObjectStore:
    return get_context(request).store


def get_session_queue(request: Request) -> SessionQueueService:
    queue = get_context(request).session_queue
    if queue is None:
        raise ServiceUnavailable("The session queue is not configured on this server")
    return queue


def get_owner(request: Request) -> str:
    return get_context(request).default_owner


ContextDep = Annotated[ApiContext, Depends(get_context)]
JobsDep = Annotated[JobGateway, Depends(get_jobs)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
OwnerDep = Annotated[str, Depends(get_owner)]
SessionQueueDep = Annotated[SessionQueueService, Depends(get_session_queue)]


def get_models(request: Request) -> ModelService:
    models = get_context(request).models
    if models is None:
        raise ServiceUnavailable("The model catalog is not configured.")
    return models


ModelsDep = Annotated[ModelService, Depends(get_models)]


def get_images(request: Request) -> ImageGateway:
    images = get_context(request).images
    if images is None:
        raise ServiceUnavailable("Images are not configured on this server.")
    return images


def get_boards(request: Request) -> BoardGateway:
    boards = get_context(request).boards
    if boards is None:
        raise ServiceUnavailable("Boards are not configured on this server.")
    return boards


ImagesDep = Annotated[ImageGateway, Depends(get_images)]
BoardsDep = Annotated[BoardGateway, Depends(get_boards)]
