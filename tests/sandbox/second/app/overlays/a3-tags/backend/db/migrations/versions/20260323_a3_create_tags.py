"""create tags

Revision ID: a3
Revises: a2
Create Date: 2026-03-23 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "a3"
down_revision = "a2"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("note_id", sa.Integer, sa.ForeignKey("notes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
    )


def downgrade():
    op.drop_table("tags")
