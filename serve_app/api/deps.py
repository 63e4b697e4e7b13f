"""FastAPI dependencies: the collaborators a route may use, as Annotated aliases."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from serve_app.domain.ports import ObjectStore
from serve_app.services.jobs import JobGateway


@dataclass(frozen=True)
class ApiContext:
    """Everything the routers need, built once by the composition root."""

    jobs: JobGateway
    store: ObjectStore
    version: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Until accounts exist, every request acts as this built-in admin (as both peers do).
    default_owner: str = "admin"


def get_context(request: Request) -> ApiContext:
    context = request.app.state.context
    assert isinstance(context, ApiContext)
    return context


def get_jobs(request: Request) -> JobGateway:
    return get_context(request).jobs


def get_store(request: Request) -> ObjectStore:
    return get_context(request).store


def get_owner(request: Request) -> str:
    return get_context(request).default_owner


ContextDep = Annotated[ApiContext, Depends(get_context)]
JobsDep = Annotated[JobGateway, Depends(get_jobs)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
OwnerDep = Annotated[str, Depends(get_owner)]
