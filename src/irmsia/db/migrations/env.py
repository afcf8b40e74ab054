"""Alembic environment: uses the engine handed over by irmsia.db.migrate."""

from __future__ import annotations

from alembic import context

from irmsia.db import models  # noqa: F401  (registers every table on the metadata)
from irmsia.db.base import Base

engine = context.config.attributes["connection_engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
