"""The job envelope: one status machine shared by both API dialects."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.models import ModelSpec


class JobStatus(enum.StrEnum):
    """A job's status; names follow InvokeAI's queue item statuses."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})


class JobError(BaseModel):
    """Why a job failed."""

    type: str
    message: str
    traceback: str | None = None


class NewJob(BaseModel):
    """What a submitter asks the queue to store."""

    model_config = ConfigDict(frozen=True)

    request: dict[str, Any]
    owner: str = "admin"
    queue_id: str = "default"
    batch_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    origin: str | None = None
    destination: str | None = None
    priority: int = 0
    max_attempts: int = 3
    # InvokeAI session-queue fields; None for jobs that are not graphs.
    session_id: str | None = None
    field_values: list[dict[str, Any]] | None = None
    workflow: dict[str, Any] | None = None
    retried_from_item_id: int | None = None


class Job(BaseModel):
    """A job as stored in Postgres."""

    id: uuid.UUID
    item_id: int
    queue_id: str
    batch_id: str
    origin: str | None
    destination: str | None
    priority: int
    status: JobStatus
    request: dict[str, Any]
    owner: str
    attempts: int
    max_attempts: int
    lease_expires_at: datetime | None
    progress_step: int | None
    progress_total: int | None
    error: JobError | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    image_names: list[str] = Field(default_factory=list)
    session_id: str | None = None
    # The executed session (InvokeAI's GraphExecutionState), stored when the item ends.
    session: dict[str, Any] | None = None
    field_values: list[dict[str, Any]] | None = None
    workflow: dict[str, Any] | None = None
    retried_from_item_id: int | None = None
    is_api_validation_run: bool = False
    published_workflow_id: str | None = None


class ClaimedJob(BaseModel):
    """A job handed to an executor: the attempt number fences stale reports."""

    id: uuid.UUID
    attempt: int
    request: dict[str, Any]
    # Who the job is, for the events it produces (InvokeAI's item events carry them).
    item_id: int = 0
    queue_id: str = "default"
    batch_id: str = ""
    origin: str | None = None
    destination: str | None = None
    session_id: str | None = None
    owner: str = "admin"
    # The registry's models this job references, resolved when it is claimed: replicas read no registry.
    models: dict[str, ModelSpec] = Field(default_factory=dict)


class Progress(BaseModel):
    """One throttled progress report from a running job."""

    step: int
    total: int
