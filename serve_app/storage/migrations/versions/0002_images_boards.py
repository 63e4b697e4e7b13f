"""Images as InvokeAI knows them (origin, board, star, session/node) and boards."""

from __future__ import annotations

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
