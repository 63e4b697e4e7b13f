"""The model registry: models, their relationships, install and download jobs, Enfugue presets, cache stats."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None

_NOW = sa.func.now()


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    ]


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("base", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_type", sa.Text(), nullable=False, server_default="path"),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source_api_response", sa.Text(), nullable=True),
        sa.Column("has_cover_image", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("trigger_phrases", JSONB(), nullable=True),
        sa.Column("default_settings", JSONB(), nullable=True),
        sa.Column("variant", sa.Text(), nullable=True),
        sa.Column("prediction_type", sa.Text(), nullable=True),
        sa.Column("upcast_attention", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("config_path", sa.Text(), nullable=True),
        sa.Column("repo_variant", sa.Text(), nullable=False, server_default=""),
        sa.Column("converted_at", sa.Float(), nullable=True),
        sa.Column("submodels", JSONB(), nullable=True),
        sa.Column("usage_info", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("key", name="models_pkey"),
        sa.UniqueConstraint("path", name="models_path_key"),
        # InvokeAI refuses a second model with the same name, base and type (409 on install or rename).
        sa.UniqueConstraint("name", "base", "type", name="models_name_base_type_key"),
    )

    # Undirected: stored once, smaller key first.
    op.create_table(
        "model_relationships",
        sa.Column("model_key_1", sa.Text(), nullable=False),
        sa.Column("model_key_2", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("model_key_1", "model_key_2", name="model_relationships_pkey"),
        sa.ForeignKeyConstraint(["model_key_1"], ["models.key"], ondelete="CASCADE", onupdate="CASCADE"),
        sa.ForeignKeyConstraint(["model_key_2"], ["models.key"], ondelete="CASCADE", onupdate="CASCADE"),
        sa.CheckConstraint("model_key_1 < model_key_2", name="model_relationships_ordered"),
    )
    op.create_index("model_relationships_key_2_idx", "model_relationships", ["model_key_2"])

    op.create_table(
        "model_install_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="waiting"),
        sa.Column("source", JSONB(), nullable=False),
        sa.Column("inplace", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("config_in", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("config_out_key", sa.Text(), nullable=True),
        sa.Column("local_path", sa.Text(), nullable=False, server_default=""),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("source_metadata", JSONB(), nullable=True),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_traceback", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="model_install_jobs_pkey"),
    )

    op.create_table(
        "download_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("install_job_id", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("dest", sa.Text(), nullable=False),
        sa.Column("download_path", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False, server_default="waiting"),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="10"),
        sa.Column("error_type", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=True),
        sa.Column("sha256", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=False, server_default="admin"),
        sa.Column("job_started", sa.DateTime(timezone=True), nullable=True),
        sa.Column("job_ended", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="download_jobs_pkey"),
        sa.ForeignKeyConstraint(["install_job_id"], ["model_install_jobs.id"], ondelete="CASCADE"),
    )
    op.create_index("download_jobs_install_idx", "download_jobs", ["install_job_id"])

    op.create_table(
        "model_presets",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False, server_default="512"),
        sa.Column("prompt", sa.Text(), nullable=False, server_default=""),
        sa.Column("negative_prompt", sa.Text(), nullable=False, server_default=""),
        sa.Column("refiner", sa.Text(), nullable=True),
        sa.Column("refiner_size", sa.Integer(), nullable=True),
        sa.Column("inpainter", sa.Text(), nullable=True),
        sa.Column("inpainter_size", sa.Integer(), nullable=True),
        sa.Column("scheduler", sa.Text(), nullable=True),
        sa.Column("vae", sa.Text(), nullable=True),
        sa.Column("refiner_vae", sa.Text(), nullable=True),
        sa.Column("inpainter_vae", sa.Text(), nullable=True),
        sa.Column("lora", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("lycoris", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("inversion", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("config", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        *_timestamps(),
        sa.PrimaryKeyConstraint("name", name="model_presets_pkey"),
    )

    op.create_table(
        "model_cache_stats",
        sa.Column("replica_id", sa.Text(), nullable=False),
        sa.Column("stats", JSONB(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("replica_id", name="model_cache_stats_pkey"),
    )

    # Small server-wide values: the Hugging Face token of `/api/v2/models/hf_login`.
    op.create_table(
        "model_settings",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("name", name="model_settings_pkey"),
    )


def downgrade() -> None:
    for table in (
        "model_settings",
        "model_cache_stats",
        "model_presets",
        "download_jobs",
        "model_install_jobs",
        "model_relationships",
        "models",
    ):
        op.drop_table(table)
