"""InvokeAI's session queue on the jobs table: sessions, batch values, retries, processor pause, event overflow."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("session_id", sa.Text(), nullable=True))
    # The executed session (GraphExecutionState), written once the item ends; NULL while it waits or runs.
    op.add_column("jobs", sa.Column("session", JSONB(), nullable=True))
    op.add_column("jobs", sa.Column("field_values", JSONB(), nullable=True))
    op.add_column("jobs", sa.Column("workflow", JSONB(), nullable=True))
    op.add_column("jobs", sa.Column("retried_from_item_id", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("is_api_validation_run", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("jobs", sa.Column("published_workflow_id", sa.Text(), nullable=True))
    op.create_index("jobs_queue_status_idx", "jobs", ["queue_id", "status"])
    op.create_index("jobs_queue_destination_idx", "jobs", ["queue_id", "destination"])

    # One processor switch for every queue and replica, as InvokeAI has one processor for all queues.
    op.create_table(
        "queue_processor",
        sa.Column("id", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="queue_processor_pkey"),
        sa.CheckConstraint("id = 1", name="queue_processor_single_row"),
    )
    op.execute("INSERT INTO queue_processor (id, paused) VALUES (1, false)")

    # NOTIFY payloads are capped at 8000 bytes: larger bus messages are parked here and sent by reference.
    op.create_table(
        "event_overflow",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="event_overflow_pkey"),
    )
    op.create_index("event_overflow_created_idx", "event_overflow", ["created_at"])


def downgrade() -> None:
    op.drop_table("event_overflow")
    op.drop_table("queue_processor")
    op.drop_index("jobs_queue_destination_idx", table_name="jobs")
    op.drop_index("jobs_queue_status_idx", table_name="jobs")
    for column in (
        "published_workflow_id",
        "is_api_validation_run",
        "retried_from_item_id",
        "workflow",
        "field_values",
        "session",
        "session_id",
    ):
        op.drop_column("jobs", column)
