"""Safety: audit events, and a policy per API key

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("policy", sa.String(100), nullable=True))
    op.create_table(
        "safety_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_name", sa.String(100), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("check", sa.String(20), nullable=False),
        sa.Column("category", sa.String(50), nullable=False),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("excerpt", sa.String(400), nullable=False),
    )
    op.create_index("ix_safety_events_created_at", "safety_events", ["created_at"])
    op.create_index("ix_safety_events_key_name", "safety_events", ["key_name"])
    op.create_index("ix_safety_events_category", "safety_events", ["category"])


def downgrade() -> None:
    op.drop_table("safety_events")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("policy")
