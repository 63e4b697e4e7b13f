"""Images as InvokeAI knows them (origin, board, star, session/node) and boards."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

_CATEGORIES = "category IN ('general', 'mask', 'control', 'user', 'other')"
_ORIGINS = "origin IN ('internal', 'external')"


def upgrade() -> None:
    op.create_table(
        "boards",
        sa.Column("board_id", sa.Text(), nullable=False),
        sa.Column("board_name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("is_private", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("owner", sa.Text(), nullable=False, server_default="admin"),
        sa.PrimaryKeyConstraint("board_id", name="boards_pkey"),
    )
    op.create_index("boards_owner_created_idx", "boards", ["owner", "created_at"])

    # Existing rows are generated images of Enfugue jobs: internal, on no board, the admin's.
    op.add_column("images", sa.Column("origin", sa.Text(), nullable=False, server_default="internal"))
    op.add_column("images", sa.Column("board_id", sa.Text(), nullable=True))
    op.add_column("images", sa.Column("starred", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("images", sa.Column("session_id", sa.Text(), nullable=True))
    op.add_column("images", sa.Column("node_id", sa.Text(), nullable=True))
    op.add_column("images", sa.Column("has_workflow", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("images", sa.Column("owner", sa.Text(), nullable=False, server_default="admin"))
    op.add_column("images", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint("images_origin_check", "images", _ORIGINS)
    op.create_check_constraint("images_category_check", "images", _CATEGORIES)
    # Deleting a board goes through the repository, which un-boards or deletes its images itself.
    op.create_foreign_key("images_board_id_fkey", "images", "boards", ["board_id"], ["board_id"], ondelete="SET NULL")
    # The gallery's listings: one board (or none) newest first, a category's non-intermediates, starred first.
    op.create_index("images_board_created_idx", "images", ["board_id", "created_at"])
    op.create_index("images_category_created_idx", "images", ["category", "is_intermediate", "created_at"])
    op.create_index("images_starred_created_idx", "images", ["starred", "created_at"])
    op.create_index("images_intermediate_idx", "images", ["created_at"], postgresql_where=sa.text("is_intermediate"))


def downgrade() -> None:
    op.drop_index("images_intermediate_idx", table_name="images")
    op.drop_index("images_starred_created_idx", table_name="images")
    op.drop_index("images_category_created_idx", table_name="images")
    op.drop_index("images_board_created_idx", table_name="images")
    op.drop_constraint("images_board_id_fkey", "images", type_="foreignkey")
    op.drop_constraint("images_category_check", "images", type_="check")
    op.drop_constraint("images_origin_check", "images", type_="check")
    for column in ("deleted_at", "owner", "has_workflow", "node_id", "session_id", "starred", "board_id", "origin"):
        op.drop_column("images", column)
    op.drop_table("boards")
