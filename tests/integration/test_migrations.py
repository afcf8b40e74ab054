"""Migrations build the same schema as the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect

from irmsia.db import migrate
from irmsia.db.base import Base
from irmsia.db.engine import make_engine


def test_upgrade_creates_every_table_and_is_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)
        assert migrate.is_current(engine)
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        engine.dispose()


def test_models_and_migrations_agree(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_sqlite_uses_wal_and_foreign_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path}/w.db")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_objects_stored_before_0006_read_at_offset_zero(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0005")
        migrate.upgrade(engine)
        columns = {column["name"]: column for column in inspect(engine).get_columns("stored_objects")}
        assert not columns["blob_offset"]["nullable"]
        assert str(columns["blob_offset"]["default"]).split("::")[0].strip("'()") == "0"  # for earlier rows
        unique = inspect(engine).get_unique_constraints("stored_objects")
        assert ["storage_key"] not in [constraint["column_names"] for constraint in unique]
    finally:
        engine.dispose()
