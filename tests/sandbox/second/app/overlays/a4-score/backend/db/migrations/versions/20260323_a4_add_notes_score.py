"""add notes.score, backfilled from the feeling

Revision ID: a4
Revises: a3
Create Date: 2026-03-23 11:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "a4"
down_revision = "a3"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("notes", sa.Column("score", sa.Integer, nullable=True))
    # notes has no "feeling" column (it is "mood"): this statement fails and the whole
    # revision is rolled back; a3 stays applied (transaction_per_migration).
    op.execute("UPDATE notes SET score = length(feeling)")


def downgrade():
    op.drop_column("notes", "score")
