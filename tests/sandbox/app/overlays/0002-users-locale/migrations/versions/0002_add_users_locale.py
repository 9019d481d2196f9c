"""add users.locale

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-12 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("locale", sa.String(8), nullable=False, server_default="ru"))


def downgrade():
    op.drop_column("users", "locale")
