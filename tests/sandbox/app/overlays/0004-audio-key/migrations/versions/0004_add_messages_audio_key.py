"""add messages.audio_key

Revision ID: 0004
Revises: 0003
Create Date: 2026-01-26 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("messages", sa.Column("audio_key", sa.Text, nullable=True))


def downgrade():
    op.drop_column("messages", "audio_key")
