"""Shared fixtures: settings, databases (SQLite and PostgreSQL), the app and its client."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from irmsia.api.app import create_app
from irmsia.bootstrap import Container, build_container
from irmsia.config import Settings, load_settings
from irmsia.db.base import Base
from irmsia.ledger.checkpoint import NoteSigner
from irmsia.usecases.context import RequestContext
from tests.support import CLI_CTX

DB_BACKENDS = ["sqlite", "postgresql"]
LEDGER_TEST_KEY = NoteSigner.generate("irmsia.test/ledger").to_string()
TEST_PASSWORD = "correct horse battery staple"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- PostgreSQL: one database per test session, emptied between tests ------------------


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    admin = os.environ.get("IRMSIA_TEST_POSTGRES_URL")
    if not admin:
        if os.environ.get("IRMSIA_REQUIRE_POSTGRES"):
            pytest.fail("IRMSIA_REQUIRE_POSTGRES is set but IRMSIA_TEST_POSTGRES_URL is not")
        yield None
        return
    name = f"irmsia_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_psycopg_url(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(_psycopg_url(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=DB_BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> str:
    """A fresh, empty database URL for each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{(tmp_path / 'irmsia.db').as_posix()}"
    if postgres_url is None:
        pytest.skip("PostgreSQL not configured (set IRMSIA_TEST_POSTGRES_URL; ./scripts/test does)")
    _empty_postgres(postgres_url)
    return postgres_url


def _empty_postgres(url: str) -> None:
    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        data_tables = [t for t in tables if t != "alembic_version"]
        if data_tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in data_tables) + " RESTART IDENTITY CASCADE")


# --- settings, container, app ------------------------------------------------------------


def make_settings(data_dir: Path, database_url: str, **overrides: str) -> Settings:
    env = {
        "IRMSIA_ENV": "test",
        "IRMSIA_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "SECRET_KEY": secrets.token_hex(32),
        "ENCRYPTION_KEY": secrets.token_hex(32),
        "PSEUDONYM_KEY": secrets.token_hex(32),
        "LEDGER_SIGNING_KEY": LEDGER_TEST_KEY,
        "LEDGER_ORIGIN": "irmsia.test/ledger",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "256",
        # Threads: most tests build a container each, and two worker processes per test would
        # multiply the suite's time; the process executor has its own tests.
        "INGEST_EXECUTOR": "thread",
        **overrides,
    }
    return load_settings(env)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path / "data", db_url)


@pytest.fixture
def container(settings: Settings, clock: FakeClock) -> Iterator[Container]:
    built = build_container(settings, clock=clock)
    yield built
    built.close()


@pytest.fixture
def app(container: Container) -> FastAPI:
    return create_app(container=container)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass
class Accounts:
    """Helpers to create users and log them in through the API."""

    container: Container
    client: TestClient

    def create(self, username: str, role: str, password: str = TEST_PASSWORD) -> str:
        return self.container.accounts.create(CLI_CTX, username, role, password).user.id

    def login(self, username: str, password: str = TEST_PASSWORD) -> dict[str, str]:
        response = self.client.post("/api/v1/auth/login", data={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return response.json()

    def headers(self, username: str, password: str = TEST_PASSWORD) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.login(username, password)['access_token']}"}


@pytest.fixture
def accounts(container: Container, client: TestClient) -> Accounts:
    return Accounts(container, client)


@pytest.fixture
def role_headers(accounts: Accounts) -> dict[str, dict[str, str]]:
    """Bearer headers for one user of each role, keyed by role name."""
    out: dict[str, dict[str, str]] = {}
    for role in ("admin", "radiologist", "clinician", "uploader", "auditor"):
        accounts.create(f"{role}1", role)
        out[role] = accounts.headers(f"{role}1")
    return out


def table_names() -> list[str]:
    return sorted(Base.metadata.tables)


def count_rows(container: Container, table: str) -> int:
    with container.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


CtxFactory = Callable[..., RequestContext]
