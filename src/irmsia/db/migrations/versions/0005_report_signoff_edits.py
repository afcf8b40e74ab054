"""report sign-offs: the clinician's diagnosis, finding edits, the signed analyses; one per study

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("report_signoffs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("diagnosis", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("analysis_ids", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("finding_edits", sa.Text(), nullable=True))
        batch_op.create_index("uq_report_signoffs_study_id", ["study_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("report_signoffs", schema=None) as batch_op:
        batch_op.drop_index("uq_report_signoffs_study_id")
        batch_op.drop_column("finding_edits")
        batch_op.drop_column("analysis_ids")
        batch_op.drop_column("diagnosis")
