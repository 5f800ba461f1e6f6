"""derived columns for the KPI catalogue

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows stored before this revision get these columns when their source next updates them.
    with op.batch_alter_table("dossiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolution_working_days", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("due_soon_from", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("encounters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("end_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("stay_days", sa.Float(), nullable=True))

    with op.batch_alter_table("feedback_reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expected_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("closed_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("close_hours", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feedback_reports", schema=None) as batch_op:
        batch_op.drop_column("close_hours")
        batch_op.drop_column("closed_date")
        batch_op.drop_column("expected_date")

    with op.batch_alter_table("encounters", schema=None) as batch_op:
        batch_op.drop_column("stay_days")
        batch_op.drop_column("end_date")

    with op.batch_alter_table("dossiers", schema=None) as batch_op:
        batch_op.drop_column("due_soon_from")
        batch_op.drop_column("resolution_working_days")
