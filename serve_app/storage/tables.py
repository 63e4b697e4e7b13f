"""SQLModel tables: the schema Alembic migrations create (target_metadata), nothing else."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from serve_app.domain.jobs import JobStatus

metadata = SQLModel.metadata

JOB_STATUSES = tuple(status.value for status in JobStatus)


def _timestamp(*, nullable: bool) -> Any:
    # Always timezone-aware: asyncpg returns aware UTC datetimes for timestamptz.
    if nullable:
        return Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True))
    return Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()))


class JobRow(SQLModel, table=True):
    """One queued generation: its request, state machine, lease and outcome."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {JOB_STATUSES!r}", name="jobs_status_check"),
        # The claim: highest priority first, then FIFO, over pending rows only.
        sa.Index(
            "jobs_claim_idx",
            sa.text("priority DESC"),
            "item_id",
            postgresql_where=sa.text("status = 'pending'"),
        ),
        # The reaper looks only at running jobs whose lease ran out.
        sa.Index("jobs_lease_idx", "lease_expires_at", postgresql_where=sa.text("status = 'in_progress'")),
        sa.Index("jobs_owner_created_idx", "owner", "created_at"),
        sa.Index("jobs_batch_idx", "batch_id"),
        sa.Index("jobs_queue_status_idx", "queue_id", "status"),
        sa.Index("jobs_queue_destination_idx", "queue_id", "destination"),
    )

    id: uuid.UUID = Field(sa_column=sa.Column(sa.Uuid(), primary_key=True, server_default=sa.text("gen_random_uuid()")))
    # The queue's monotonically increasing item number (InvokeAI's item_id), assigned by Postgres.
    item_id: int = Field(sa_column=sa.Column(sa.BigInteger(), sa.Identity(always=True), nullable=False, unique=True))
    queue_id: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    batch_id: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    origin: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    destination: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    priority: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0"))
    status: str = Field(sa_column=sa.Column(sa.Text(), nullable=False, server_default="pending"))
    request: dict[str, Any] = Field(sa_column=sa.Column(JSONB(), nullable=False))
    owner: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    attempts: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0"))
    max_attempts: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False, server_default="3"))
    lease_expires_at: datetime | None = _timestamp(nullable=True)
    progress_step: int | None = Field(default=None, sa_column=sa.Column(sa.Integer(), nullable=True))
    progress_total: int | None = Field(default=None, sa_column=sa.Column(sa.Integer(), nullable=True))
    error_type: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    error_message: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    error_traceback: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    created_at: datetime = _timestamp(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)
    started_at: datetime | None = _timestamp(nullable=True)
    completed_at: datetime | None = _timestamp(nullable=True)
    # InvokeAI session-queue fields (NULL for jobs that are not graphs).
    session_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    session: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONB(), nullable=True))
    field_values: list[Any] | None = Field(default=None, sa_column=sa.Column(JSONB(), nullable=True))
    workflow: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONB(), nullable=True))
    retried_from_item_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True))
    is_api_validation_run: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false())
    )
    published_workflow_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))


class QueueProcessorRow(SQLModel, table=True):
    """The single row holding the processor switch (pause/resume) shared by every replica."""

    __tablename__ = "queue_processor"
    __table_args__ = (sa.CheckConstraint("id = 1", name="queue_processor_single_row"),)

    id: int = Field(sa_column=sa.Column(sa.Integer(), primary_key=True, server_default="1"))
    paused: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))


class EventOverflowRow(SQLModel, table=True):
    """A bus message too large for a NOTIFY payload, sent by reference to this row."""

    __tablename__ = "event_overflow"
    __table_args__ = (sa.Index("event_overflow_created_idx", "created_at"),)

    id: int = Field(sa_column=sa.Column(sa.BigInteger(), sa.Identity(always=True), primary_key=True))
    payload: dict[str, Any] = Field(sa_column=sa.Column(JSONB(), nullable=False))
    created_at: datetime = _timestamp(nullable=False)


class BoardRow(SQLModel, table=True):
    """An InvokeAI board; an image is on at most one (images.board_id)."""

    __tablename__ = "boards"
    __table_args__ = (sa.Index("boards_owner_created_idx", "owner", "created_at"),)

    board_id: str = Field(sa_column=sa.Column(sa.Text(), primary_key=True))
    board_name: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    created_at: datetime = _timestamp(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)
    deleted_at: datetime | None = _timestamp(nullable=True)
    archived: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))
    is_private: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))
    owner: str = Field(sa_column=sa.Column(sa.Text(), nullable=False, server_default="admin"))


class ImageRow(SQLModel, table=True):
    """One generated (or uploaded) image; the bytes live in object storage under storage_key."""

    __tablename__ = "images"
    __table_args__ = (
        sa.Index("images_job_idx", "job_id"),
        sa.CheckConstraint("origin IN ('internal', 'external')", name="images_origin_check"),
        sa.CheckConstraint("category IN ('general', 'mask', 'control', 'user', 'other')", name="images_category_check"),
        sa.Index("images_board_created_idx", "board_id", "created_at"),
        sa.Index("images_category_created_idx", "category", "is_intermediate", "created_at"),
        sa.Index("images_starred_created_idx", "starred", "created_at"),
        sa.Index("images_intermediate_idx", "created_at", postgresql_where=sa.text("is_intermediate")),
    )

    name: str = Field(sa_column=sa.Column(sa.Text(), primary_key=True))
    # The repository deletes a job's image rows itself (it must return them so their objects can
    # go too); SET NULL only guards against other deletes silently dropping rows that still
    # point at stored objects.
    job_id: uuid.UUID | None = Field(
        default=None,
        sa_column=sa.Column(sa.Uuid(), sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
    )
    position: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0"))
    width: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False))
    height: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False))
    category: str = Field(sa_column=sa.Column(sa.Text(), nullable=False, server_default="general"))
    is_intermediate: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))
    metadata_: dict[str, Any] = Field(
        sa_column=sa.Column("metadata", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))
    )
    storage_key: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    thumbnail_key: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    created_at: datetime = _timestamp(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)
    # InvokeAI's image record (migration 0002).
    origin: str = Field(sa_column=sa.Column(sa.Text(), nullable=False, server_default="internal"))
    board_id: str | None = Field(
        default=None,
        sa_column=sa.Column(sa.Text(), sa.ForeignKey("boards.board_id", ondelete="SET NULL"), nullable=True),
    )
    starred: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))
    session_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    node_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    has_workflow: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))
    owner: str = Field(sa_column=sa.Column(sa.Text(), nullable=False, server_default="admin"))
    deleted_at: datetime | None = _timestamp(nullable=True)
