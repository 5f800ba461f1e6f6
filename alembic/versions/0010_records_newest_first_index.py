"""Dossiers and feedback reports indexed in their browsing order, newest first

`GET /api/v1/records/dossier` lists the newest records first (received date, then id). Without
an index in that order PostgreSQL sorted the whole table for every page: 270 ms of the
database's CPU per page at 600,000 dossiers in the soak benchmark, the heaviest statement of
its whole run. With `(received_date, id)` a page reads its 20 entries from the index's end.
Feedback reports, the other table that grows with citizens' activity, get the same.

Built without CONCURRENTLY (migrations run in one transaction): writes to the table wait while
the index is built, a few seconds per million rows.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_dossiers_received_date_id", "dossiers", ["received_date", "id"])
    op.create_index(
        "ix_feedback_reports_requested_date_id", "feedback_reports", ["requested_date", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_feedback_reports_requested_date_id", table_name="feedback_reports")
    op.drop_index("ix_dossiers_received_date_id", table_name="dossiers")
