"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_units",
        sa.Column("code", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("division_type", sa.String(length=40), nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("parent_code", sa.String(length=10), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_code"],
            ["admin_units.code"],
            name=op.f("fk_admin_units_parent_code_admin_units"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_admin_units")),
    )
    with op.batch_alter_table("admin_units", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_units_level"), ["level"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_admin_units_parent_code"), ["parent_code"], unique=False
        )

    op.create_table(
        "connector_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column(
            "config", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column(
            "cursor", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("health", sa.String(length=20), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connector_instances")),
        sa.UniqueConstraint("name", name=op.f("uq_connector_instances_name")),
    )
    with op.batch_alter_table("connector_instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_connector_instances_kind"), ["kind"], unique=False)

    op.create_table(
        "kpi_values",
        sa.Column("kpi", sa.String(length=80), nullable=False),
        sa.Column("unit_code", sa.String(length=10), nullable=False),
        sa.Column("period_kind", sa.String(length=10), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("numerator", sa.Float(), nullable=False),
        sa.Column("denominator", sa.Float(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "kpi", "unit_code", "period_kind", "period_start", name=op.f("pk_kpi_values")
        ),
    )
    op.create_table(
        "dossiers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("unit_code", sa.String(length=10), nullable=False),
        sa.Column("original_unit_code", sa.String(length=10), nullable=True),
        sa.Column("procedure_code", sa.String(length=64), nullable=False),
        sa.Column("procedure_name", sa.String(length=500), nullable=False),
        sa.Column("field_code", sa.String(length=64), nullable=False),
        sa.Column("field_name", sa.String(length=200), nullable=False),
        sa.Column("agency_code", sa.String(length=64), nullable=False),
        sa.Column("agency_name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_date", sa.Date(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("resolved_date", sa.Date(), nullable=True),
        sa.Column("paid_online", sa.Boolean(), nullable=False),
        sa.Column("synced_to_portal", sa.Boolean(), nullable=False),
        sa.Column("apology_issued", sa.Boolean(), nullable=False),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["connector_instances.id"],
            name=op.f("fk_dossiers_instance_id_connector_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dossiers")),
        sa.UniqueConstraint("instance_id", "external_id", name="uq_dossiers_instance_external"),
    )
    with op.batch_alter_table("dossiers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dossiers_agency_code"), ["agency_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_dossiers_field_code"), ["field_code"], unique=False)
        batch_op.create_index("ix_dossiers_unit_due_date", ["unit_code", "due_date"], unique=False)
        batch_op.create_index(
            "ix_dossiers_unit_received_date", ["unit_code", "received_date"], unique=False
        )

    op.create_table(
        "poll_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("fetched", sa.Integer(), nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["connector_instances.id"],
            name=op.f("fk_poll_runs_instance_id_connector_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_poll_runs")),
    )
    with op.batch_alter_table("poll_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_poll_runs_instance_id"), ["instance_id"], unique=False)

    op.create_table(
        "rejected_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("record_type", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["connector_instances.id"],
            name=op.f("fk_rejected_records_instance_id_connector_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_records")),
    )
    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rejected_records_external_id"), ["external_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_rejected_records_instance_id"), ["instance_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_records_instance_id"))
        batch_op.drop_index(batch_op.f("ix_rejected_records_external_id"))

    op.drop_table("rejected_records")
    with op.batch_alter_table("poll_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_poll_runs_instance_id"))

    op.drop_table("poll_runs")
    with op.batch_alter_table("dossiers", schema=None) as batch_op:
        batch_op.drop_index("ix_dossiers_unit_received_date")
        batch_op.drop_index("ix_dossiers_unit_due_date")
        batch_op.drop_index(batch_op.f("ix_dossiers_field_code"))
        batch_op.drop_index(batch_op.f("ix_dossiers_agency_code"))

    op.drop_table("dossiers")
    op.drop_table("kpi_values")
    with op.batch_alter_table("connector_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connector_instances_kind"))

    op.drop_table("connector_instances")
    with op.batch_alter_table("admin_units", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_units_parent_code"))
        batch_op.drop_index(batch_op.f("ix_admin_units_level"))

    op.drop_table("admin_units")
