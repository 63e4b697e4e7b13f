"""Leases on install and download jobs, so a replica that crashed mid-job does not leave it running forever.

The replica running a job renews its lease while the job's task lives; any replica ends a job whose lease has
expired (services/background.py). Rows that exist when this migration runs get a fresh lease: an unfinished one
was left by a server that has since stopped, and is reaped once that lease runs out.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

# A new row's first lease; its replica renews it long before (services.background.LEASE_RENEW_S).
_FIRST_LEASE = sa.text("now() + interval '2 minutes'")
_TABLES = ("model_install_jobs", "download_jobs")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(
            table, sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True, server_default=_FIRST_LEASE)
        )


def downgrade() -> None:
    for table in _TABLES:
        op.drop_column(table, "lease_expires_at")
