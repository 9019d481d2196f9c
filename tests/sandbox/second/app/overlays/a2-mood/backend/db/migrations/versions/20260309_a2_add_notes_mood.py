"""add notes.mood

Revision ID: a2
Revises: a1
Create Date: 2026-03-09 10:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "a2"
down_revision = "a1"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("notes", sa.Column("mood", sa.Text, nullable=True))


def downgrade():
    op.drop_column("notes", "mood")
