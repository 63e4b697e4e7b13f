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


def _lease() -> Any:
    # Install and download jobs (migration 0006): a new row's first lease, renewed by the replica running it.
    return Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=True, server_default=sa.text("now() + interval '2 minutes'")
        ),
    )


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


# Model management (migration 0004).


def _text(*, nullable: bool, default: str | None = None) -> Any:
    column = sa.Column(sa.Text(), nullable=nullable, server_default=default)
    return Field(default=None, sa_column=column) if nullable else Field(sa_column=column)


def _jsonb(*, nullable: bool, default: str | None = None) -> Any:
    server_default = sa.text(default) if default is not None else None
    column = sa.Column(JSONB(), nullable=nullable, server_default=server_default)
    return Field(default=None, sa_column=column) if nullable else Field(sa_column=column)


def _flag() -> Any:
    return Field(sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()))


def _bigint(default: str | None = None) -> Any:
    return Field(sa_column=sa.Column(sa.BigInteger(), nullable=False, server_default=default))


class ModelRow(SQLModel, table=True):
    """One registered model (domain.models.ModelRecord)."""

    __tablename__ = "models"
    __table_args__ = (
        sa.UniqueConstraint("path", name="models_path_key"),
        # InvokeAI refuses a second model with the same name, base and type (409 on install or rename).
        sa.UniqueConstraint("name", "base", "type", name="models_name_base_type_key"),
    )

    key: str = Field(sa_column=sa.Column(sa.Text(), primary_key=True))
    name: str = _text(nullable=False)
    base: str = _text(nullable=False)
    type: str = _text(nullable=False)
    format: str = _text(nullable=False)
    path: str = _text(nullable=False)
    hash: str = _text(nullable=False)
    file_size: int = _bigint()
    source: str = _text(nullable=False)
    source_type: str = _text(nullable=False, default="path")
    description: str | None = _text(nullable=True)
    source_api_response: str | None = _text(nullable=True)
    has_cover_image: bool = _flag()
    trigger_phrases: list[str] | None = _jsonb(nullable=True)
    default_settings: dict[str, Any] | None = _jsonb(nullable=True)
    variant: str | None = _text(nullable=True)
    prediction_type: str | None = _text(nullable=True)
    upcast_attention: bool = _flag()
    config_path: str | None = _text(nullable=True)
    repo_variant: str = _text(nullable=False, default="")
    converted_at: float | None = Field(default=None, sa_column=sa.Column(sa.Float(), nullable=True))
    submodels: dict[str, Any] | None = _jsonb(nullable=True)
    usage_info: str | None = _text(nullable=True)
    created_at: datetime = _timestamp(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)


class ModelRelationshipRow(SQLModel, table=True):
    """An undirected relationship between two models, stored once with the smaller key first."""

    __tablename__ = "model_relationships"
    __table_args__ = (
        sa.CheckConstraint("model_key_1 < model_key_2", name="model_relationships_ordered"),
        sa.Index("model_relationships_key_2_idx", "model_key_2"),
    )

    model_key_1: str = Field(
        sa_column=sa.Column(
            sa.Text(), sa.ForeignKey("models.key", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
        )
    )
    model_key_2: str = Field(
        sa_column=sa.Column(
            sa.Text(), sa.ForeignKey("models.key", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
        )
    )
    created_at: datetime = _timestamp(nullable=False)


class ModelInstallJobRow(SQLModel, table=True):
    """One model install (domain.model_jobs.InstallJob)."""

    __tablename__ = "model_install_jobs"

    id: int = Field(sa_column=sa.Column(sa.BigInteger(), sa.Identity(always=True), primary_key=True))
    status: str = _text(nullable=False, default="waiting")
    source: dict[str, Any] = _jsonb(nullable=False)
    inplace: bool = _flag()
    config_in: dict[str, Any] = _jsonb(nullable=False, default="'{}'::jsonb")
    config_out_key: str | None = _text(nullable=True)
    local_path: str = _text(nullable=False, default="")
    bytes: int = _bigint("0")
    total_bytes: int = _bigint("0")
    source_metadata: dict[str, Any] | None = _jsonb(nullable=True)
    error_reason: str | None = _text(nullable=True)
    error: str | None = _text(nullable=True)
    error_traceback: str | None = _text(nullable=True)
    created_at: datetime = _timestamp(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)
    lease_expires_at: datetime | None = _lease()


class DownloadJobRow(SQLModel, table=True):
    """One file download (domain.model_jobs.DownloadJob), on its own or as a part of an install."""

    __tablename__ = "download_jobs"
    __table_args__ = (sa.Index("download_jobs_install_idx", "install_job_id"),)

    id: int = Field(sa_column=sa.Column(sa.BigInteger(), sa.Identity(always=True), primary_key=True))
    install_job_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger(), sa.ForeignKey("model_install_jobs.id", ondelete="CASCADE"), nullable=True),
    )
    source: str = _text(nullable=False)
    dest: str = _text(nullable=False)
    download_path: str | None = _text(nullable=True)
    status: str = _text(nullable=False, default="waiting")
    bytes: int = _bigint("0")
    total_bytes: int = _bigint("0")
    priority: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False, server_default="10"))
    error_type: str | None = _text(nullable=True)
    error: str | None = _text(nullable=True)
    content_type: str | None = _text(nullable=True)
    sha256: str | None = _text(nullable=True)
    kind: str | None = _text(nullable=True)
    owner: str = _text(nullable=False, default="admin")
    job_started: datetime | None = _timestamp(nullable=True)
    job_ended: datetime | None = _timestamp(nullable=True)
    created_at: datetime = _timestamp(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)
    lease_expires_at: datetime | None = _lease()


class ModelPresetRow(SQLModel, table=True):
    """An Enfugue model preset (domain.presets.ModelPreset)."""

    __tablename__ = "model_presets"

    name: str = Field(sa_column=sa.Column(sa.Text(), primary_key=True))
    checkpoint: str = _text(nullable=False)
    size: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False, server_default="512"))
    prompt: str = _text(nullable=False, default="")
    negative_prompt: str = _text(nullable=False, default="")
    refiner: str | None = _text(nullable=True)
    refiner_size: int | None = Field(default=None, sa_column=sa.Column(sa.Integer(), nullable=True))
    inpainter: str | None = _text(nullable=True)
    inpainter_size: int | None = Field(default=None, sa_column=sa.Column(sa.Integer(), nullable=True))
    scheduler: str | None = _text(nullable=True)
    vae: str | None = _text(nullable=True)
    refiner_vae: str | None = _text(nullable=True)
    inpainter_vae: str | None = _text(nullable=True)
    lora: list[Any] = _jsonb(nullable=False, default="'[]'::jsonb")
    lycoris: list[Any] = _jsonb(nullable=False, default="'[]'::jsonb")
    inversion: list[Any] = _jsonb(nullable=False, default="'[]'::jsonb")
    config: dict[str, Any] = _jsonb(nullable=False, default="'{}'::jsonb")
    created_at: datetime = _timestamp(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)


class ModelCacheStatsRow(SQLModel, table=True):
    """What one Diffusion replica's model cache holds, in InvokeAI's `CacheStats` shape."""

    __tablename__ = "model_cache_stats"

    replica_id: str = Field(sa_column=sa.Column(sa.Text(), primary_key=True))
    stats: dict[str, Any] = _jsonb(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)


class ModelSettingRow(SQLModel, table=True):
    """A small server-wide value (the Hugging Face token of `/api/v2/models/hf_login`)."""

    __tablename__ = "model_settings"

    name: str = Field(sa_column=sa.Column(sa.Text(), primary_key=True))
    value: str = _text(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)


class AppSettingRow(SQLModel, table=True):
    """One server setting (Enfugue's `/api/settings` keys), JSON-valued."""

    __tablename__ = "app_settings"

    key: str = Field(sa_column=sa.Column(sa.Text(), primary_key=True))
    value: Any = _jsonb(nullable=False)
    updated_at: datetime = _timestamp(nullable=False)


class UserRow(SQLModel, table=True):
    """An account; `admin` is Enfugue's admin group membership."""

    __tablename__ = "users"
    __table_args__ = (sa.Index("users_username_lower_key", sa.text("lower(username)"), unique=True),)

    id: int = Field(sa_column=sa.Column(sa.BigInteger(), sa.Identity(always=True), primary_key=True))
    username: str = _text(nullable=False)
    password_hash: str = _text(nullable=False)
    first_name: str | None = _text(nullable=True)
    last_name: str | None = _text(nullable=True)
    admin: bool = _flag()
    created_at: datetime = _timestamp(nullable=False)
    last_login: datetime | None = _timestamp(nullable=True)


class AuthTokenRow(SQLModel, table=True):
    """A login session token or an API key, stored as its sha256 only."""

    __tablename__ = "auth_tokens"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('session', 'api_key')", name="auth_tokens_kind_check"),
        sa.Index("auth_tokens_user_idx", "user_id"),
    )

    id: int = Field(sa_column=sa.Column(sa.BigInteger(), sa.Identity(always=True), primary_key=True))
    user_id: int = Field(
        sa_column=sa.Column(sa.BigInteger(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    token_hash: str = Field(sa_column=sa.Column(sa.Text(), nullable=False, unique=True))
    kind: str = _text(nullable=False)
    name: str | None = _text(nullable=True)
    created_at: datetime = _timestamp(nullable=False)
    expires_at: datetime | None = _timestamp(nullable=True)
    last_used_at: datetime | None = _timestamp(nullable=True)
