"""stored objects may share a blob: an object is the ``size`` bytes at ``blob_offset``

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stored_objects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("blob_offset", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.drop_constraint("uq_stored_objects_storage_key", type_="unique")
        batch_op.create_index("ix_stored_objects_storage_key", ["storage_key"], unique=False)


def downgrade() -> None:
    # Only possible while every object still has a blob of its own (no shared storage key).
    with op.batch_alter_table("stored_objects", schema=None) as batch_op:
        batch_op.drop_index("ix_stored_objects_storage_key")
        batch_op.create_unique_constraint("uq_stored_objects_storage_key", ["storage_key"])
        batch_op.drop_column("blob_offset")
