"""records of all domains and a hardened connector runtime

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Columns added to existing tables get server defaults so that existing rows stay valid.
    op.create_table(
        "bed_censuses",
        sa.Column("facility_code", sa.String(length=64), nullable=False),
        sa.Column("facility_name", sa.String(length=200), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("measured_date", sa.Date(), nullable=False),
        sa.Column("beds_total", sa.Integer(), nullable=False),
        sa.Column("beds_occupied", sa.Integer(), nullable=False),
        sa.Column("beds_closed", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("unit_code", sa.String(length=10), nullable=False),
        sa.Column("original_unit_code", sa.String(length=10), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["connector_instances.id"],
            name=op.f("fk_bed_censuses_instance_id_connector_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bed_censuses")),
        sa.UniqueConstraint("instance_id", "external_id", name="uq_bed_censuses_instance_external"),
    )
    with op.batch_alter_table("bed_censuses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bed_censuses_facility_measured_at", ["facility_code", "measured_at"], unique=False
        )

    op.create_table(
        "encounters",
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("facility_code", sa.String(length=64), nullable=False),
        sa.Column("facility_name", sa.String(length=200), nullable=False),
        sa.Column("encounter_class", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("wait_minutes", sa.Float(), nullable=True),
        sa.Column("discharge_disposition", sa.String(length=64), nullable=True),
        sa.Column("referred_out", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("unit_code", sa.String(length=10), nullable=False),
        sa.Column("original_unit_code", sa.String(length=10), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["connector_instances.id"],
            name=op.f("fk_encounters_instance_id_connector_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_encounters")),
        sa.UniqueConstraint("instance_id", "external_id", name="uq_encounters_instance_external"),
    )
    with op.batch_alter_table("encounters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_encounters_facility_code"), ["facility_code"], unique=False
        )
        batch_op.create_index(
            "ix_encounters_unit_start_date", ["unit_code", "start_date"], unique=False
        )

    op.create_table(
        "feedback_reports",
        sa.Column("service_code", sa.String(length=64), nullable=False),
        sa.Column("service_name", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("status_notes", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("agency", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requested_date", sa.Date(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("reporter_name", sa.String(length=200), nullable=True),
        sa.Column("reporter_phone", sa.String(length=50), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("unit_code", sa.String(length=10), nullable=False),
        sa.Column("original_unit_code", sa.String(length=10), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["connector_instances.id"],
            name=op.f("fk_feedback_reports_instance_id_connector_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_reports")),
        sa.UniqueConstraint(
            "instance_id", "external_id", name="uq_feedback_reports_instance_external"
        ),
    )
    with op.batch_alter_table("feedback_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_reports_agency"), ["agency"], unique=False)
        batch_op.create_index(
            "ix_feedback_reports_unit_requested_date", ["unit_code", "requested_date"], unique=False
        )

    op.create_table(
        "observations",
        sa.Column("metric", sa.String(length=80), nullable=False),
        sa.Column("period_kind", sa.String(length=10), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("numerator", sa.Float(), nullable=True),
        sa.Column("denominator", sa.Float(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("unit_code", sa.String(length=10), nullable=False),
        sa.Column("original_unit_code", sa.String(length=10), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["connector_instances.id"],
            name=op.f("fk_observations_instance_id_connector_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observations")),
        sa.UniqueConstraint("instance_id", "external_id", name="uq_observations_instance_external"),
    )
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_observations_metric_unit_period",
            ["metric", "unit_code", "period_start"],
            unique=False,
        )

    op.create_table(
        "school_days",
        sa.Column("school_code", sa.String(length=64), nullable=False),
        sa.Column("school_name", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("enrolled", sa.Integer(), nullable=False),
        sa.Column("present", sa.Integer(), nullable=False),
        sa.Column("teachers", sa.Integer(), nullable=False),
        sa.Column("classes", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("unit_code", sa.String(length=10), nullable=False),
        sa.Column("original_unit_code", sa.String(length=10), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["connector_instances.id"],
            name=op.f("fk_school_days_instance_id_connector_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_school_days")),
        sa.UniqueConstraint("instance_id", "external_id", name="uq_school_days_instance_external"),
    )
    with op.batch_alter_table("school_days", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_school_days_school_code"), ["school_code"], unique=False
        )
        batch_op.create_index("ix_school_days_unit_day", ["unit_code", "day"], unique=False)

    with op.batch_alter_table("connector_instances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("timeout_seconds", sa.Float(), nullable=False, server_default="120")
        )
        batch_op.add_column(
            sa.Column("max_backoff_seconds", sa.Integer(), nullable=False, server_default="900")
        )
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("last_run_started_at", sa.DateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("dossiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fee", sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("digitised", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column(
                "reused_national_data", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(
            sa.Column("electronic_result", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column(
                "supplements",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=False,
                server_default="[]",
            )
        )

    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stage", sa.String(length=20), nullable=False, server_default="mapping")
        )
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_rejected_records_resolved_at"), ["resolved_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_records_resolved_at"))
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("stage")

    with op.batch_alter_table("dossiers", schema=None) as batch_op:
        batch_op.drop_column("supplements")
        batch_op.drop_column("electronic_result")
        batch_op.drop_column("reused_national_data")
        batch_op.drop_column("digitised")
        batch_op.drop_column("fee")

    with op.batch_alter_table("connector_instances", schema=None) as batch_op:
        batch_op.drop_column("last_run_started_at")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("max_backoff_seconds")
        batch_op.drop_column("timeout_seconds")

    with op.batch_alter_table("school_days", schema=None) as batch_op:
        batch_op.drop_index("ix_school_days_unit_day")
        batch_op.drop_index(batch_op.f("ix_school_days_school_code"))

    op.drop_table("school_days")
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_index("ix_observations_metric_unit_period")

    op.drop_table("observations")
    with op.batch_alter_table("feedback_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_reports_unit_requested_date")
        batch_op.drop_index(batch_op.f("ix_feedback_reports_agency"))

    op.drop_table("feedback_reports")
    with op.batch_alter_table("encounters", schema=None) as batch_op:
        batch_op.drop_index("ix_encounters_unit_start_date")
        batch_op.drop_index(batch_op.f("ix_encounters_facility_code"))

    op.drop_table("encounters")
    with op.batch_alter_table("bed_censuses", schema=None) as batch_op:
        batch_op.drop_index("ix_bed_censuses_facility_measured_at")

    op.drop_table("bed_censuses")
