"""add messages.lang, backfilled from the author's language

Revision ID: 0005
Revises: 0004
Create Date: 2026-01-26 11:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("messages", sa.Column("lang", sa.String(8), nullable=True))
    # users has no "language" column (it is "locale"): this statement fails, and the
    # whole revision is rolled back; 0004 stays applied (transaction_per_migration).
    op.execute("UPDATE messages AS m SET lang = u.language FROM users AS u WHERE u.id = m.user_id")


def downgrade():
    op.drop_column("messages", "lang")
