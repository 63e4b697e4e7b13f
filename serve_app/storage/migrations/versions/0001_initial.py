"""Jobs and images, with the claim/reaper indexes and the job-change NOTIFY trigger."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

# Versioned names (`_v1`), so a later migration can add a `_v2` while old replicas still listen.
_NOTIFY_FUNCTION = """
CREATE FUNCTION serve_app_notify_job_v1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only state changes are news; lease renewals and other bookkeeping stay silent.
    IF TG_OP = 'INSERT'
        OR NEW.status IS DISTINCT FROM OLD.status
        OR NEW.progress_step IS DISTINCT FROM OLD.progress_step
        OR NEW.progress_total IS DISTINCT FROM OLD.progress_total
    THEN
        -- Keep the payload small (NOTIFY caps it at 8000 bytes): listeners read the rest from the row.
        PERFORM pg_notify('serve_app_jobs_v1', json_build_object(
            'id', NEW.id,
            'item_id', NEW.item_id,
            'queue_id', NEW.queue_id,
            'status', NEW.status,
            'progress_step', NEW.progress_step,
            'progress_total', NEW.progress_total
        )::text);
    END IF;
    RETURN NULL;
END;
$$
"""

_NOTIFY_TRIGGER = """
CREATE TRIGGER serve_app_notify_job_v1 AFTER INSERT OR UPDATE ON jobs
FOR EACH ROW EXECUTE FUNCTION serve_app_notify_job_v1()
"""


def _timestamp(name: str, *, nullable: bool) -> sa.Column[object]:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False, server_default=sa.text("gen_random_uuid()")),
        sa.Column("item_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("queue_id", sa.Text(), nullable=False),
        sa.Column("batch_id", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=True),
        sa.Column("destination", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("request", JSONB(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"),
        _timestamp("lease_expires_at", nullable=True),
        sa.Column("progress_step", sa.Integer(), nullable=True),
        sa.Column("progress_total", sa.Integer(), nullable=True),
        sa.Column("error_type", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_traceback", sa.Text(), nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        _timestamp("started_at", nullable=True),
        _timestamp("completed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="jobs_pkey"),
        sa.UniqueConstraint("item_id", name="jobs_item_id_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'in_progress', 'completed', 'failed', 'canceled')", name="jobs_status_check"
        ),
    )
    # The claim reads pending rows in (priority DESC, item_id) order; the partial index holds only those.
    op.create_index(
        "jobs_claim_idx",
        "jobs",
        [sa.text("priority DESC"), "item_id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    # The reaper scans running jobs by lease expiry.
    op.create_index("jobs_lease_idx", "jobs", ["lease_expires_at"], postgresql_where=sa.text("status = 'in_progress'"))
    op.create_index("jobs_owner_created_idx", "jobs", ["owner", "created_at"])
    op.create_index("jobs_batch_idx", "jobs", ["batch_id"])

    op.create_table(
        "images",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False, server_default="general"),
        sa.Column("is_intermediate", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("metadata", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("thumbnail_key", sa.Text(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("name", name="images_pkey"),
        # Deleting a job goes through the repository, which deletes (and returns) its image rows.
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="images_job_id_fkey", ondelete="SET NULL"),
    )
    op.create_index("images_job_idx", "images", ["job_id"])

    op.execute(_NOTIFY_FUNCTION)
    op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS serve_app_notify_job_v1 ON jobs")
    op.execute("DROP FUNCTION IF EXISTS serve_app_notify_job_v1()")
    op.drop_table("images")
    op.drop_table("jobs")
