"""incidents: rules, incidents, timelines, evidence records, pending rule states

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ACTIVE = "status != 'resolved'"


def upgrade() -> None:
    # The default rules are stored at start (`seed_default_rules`), from the KPI catalogue.
    op.create_table(
        "incident_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("kpi", sa.String(length=80), nullable=True),
        sa.Column("unit_code", sa.String(length=10), nullable=True),
        sa.Column("per_commune", sa.Boolean(), nullable=False),
        sa.Column("group_by", JSON, nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=True),
        sa.Column("warn", sa.Float(), nullable=True),
        sa.Column("critical", sa.Float(), nullable=True),
        sa.Column("recovery", sa.Float(), nullable=True),
        sa.Column("pending_evaluations", sa.Integer(), nullable=False),
        sa.Column("quiet_minutes", sa.Float(), nullable=False),
        sa.Column("relapse_minutes", sa.Float(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_incident_rules_name")),
    )
    op.create_index(op.f("ix_incident_rules_kind"), "incident_rules", ["kind"], unique=False)
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedup_key", sa.String(length=400), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("rule_kind", sa.String(length=40), nullable=False),
        sa.Column("domain", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("title_en", sa.String(length=500), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("unit_code", sa.String(length=10), nullable=True),
        sa.Column("unit_name", sa.String(length=200), nullable=True),
        sa.Column("agency_code", sa.String(length=200), nullable=True),
        sa.Column("subject", JSON, nullable=False),
        sa.Column("kpi", sa.String(length=80), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("peak_value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("breach_count", sa.Integer(), nullable=False),
        sa.Column("reopen_count", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("assignee", sa.String(length=200), nullable=True),
        sa.Column("evidence", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["incident_rules.id"],
            name=op.f("fk_incidents_rule_id_incident_rules"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    for column in ("dedup_key", "rule_id", "domain", "status", "unit_code", "agency_code"):
        op.create_index(op.f(f"ix_incidents_{column}"), "incidents", [column], unique=False)
    op.create_index(op.f("ix_incidents_opened_at"), "incidents", ["opened_at"], unique=False)
    op.create_index(
        "uq_incidents_active_dedup_key",
        "incidents",
        ["dedup_key"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )
    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_events_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_events")),
    )
    op.create_index(
        op.f("ix_incident_events_incident_id"), "incident_events", ["incident_id"], unique=False
    )
    op.create_table(
        "incident_records",
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("record_type", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_records_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "incident_id", "record_type", "record_id", name=op.f("pk_incident_records")
        ),
    )
    op.create_table(
        "incident_rule_states",
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("dedup_key", sa.String(length=400), nullable=False),
        sa.Column("breaches", sa.Integer(), nullable=False),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["incident_rules.id"],
            name=op.f("fk_incident_rule_states_rule_id_incident_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rule_id", "dedup_key", name=op.f("pk_incident_rule_states")),
    )


def downgrade() -> None:
    op.drop_table("incident_rule_states")
    op.drop_table("incident_records")
    op.drop_index(op.f("ix_incident_events_incident_id"), table_name="incident_events")
    op.drop_table("incident_events")
    op.drop_index("uq_incidents_active_dedup_key", table_name="incidents")
    op.drop_index(op.f("ix_incidents_opened_at"), table_name="incidents")
    for column in ("dedup_key", "rule_id", "domain", "status", "unit_code", "agency_code"):
        op.drop_index(op.f(f"ix_incidents_{column}"), table_name="incidents")
    op.drop_table("incidents")
    op.drop_index(op.f("ix_incident_rules_kind"), table_name="incident_rules")
    op.drop_table("incident_rules")
