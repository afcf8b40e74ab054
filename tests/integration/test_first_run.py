"""First run: ``irmsia serve`` on an empty data directory creates ``admin`` with a one-time password.

The command runs in-process through ``main(argv)``; only the final step, handing the built app
to uvicorn, is replaced by a stand-in that keeps the app, which the test then calls over
HTTP (TestClient) as a browser would call the real server.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from irmsia.cli import main as cli
from irmsia.config import Settings, load_settings
from irmsia.pipeline.executors import ProcessExecutor
from tests.factories import make_ct, to_bytes

pytestmark = pytest.mark.db

NEW_PASSWORD = "a brand new long passphrase"


class Server:
    """Stands in for uvicorn: remembers what ``irmsia serve`` would have served."""

    def __init__(self) -> None:
        self.started: list[tuple[FastAPI, str, int]] = []

    def __call__(self, app: FastAPI, *, host: str, port: int, settings: Settings) -> None:
        self.started.append((app, host, port))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Server:
    stand_in = Server()
    monkeypatch.setattr(cli, "_run_server", stand_in)
    return stand_in


def _first_start_settings(data_dir: Path, db_url: str) -> Settings:
    """Development defaults on an empty data directory: secrets are generated there."""
    return load_settings(
        {
            "IRMSIA_ENV": "development",
            "IRMSIA_DATA_DIR": str(data_dir),
            "DATABASE_URL": db_url,
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_KIB": "256",
        }
    )


def _serve(settings: Settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(["serve", *argv], out=out, settings=settings)
    return code, out.getvalue()


def _change_password(
    client: TestClient, username: str, password: str, headers: dict[str, str]
) -> dict[str, str]:
    """Replace a one-time password by NEW_PASSWORD; the headers of a fresh sign-in with it."""
    changed = client.post(
        "/api/v1/auth/password",
        json={"current_password": password, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    assert changed.status_code == 204, changed.text
    login = client.post("/api/v1/auth/login", data={"username": username, "password": NEW_PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def _one_time_password(output: str) -> str:
    lines = output.splitlines()
    (at,) = [i for i, line in enumerate(lines) if "one-time password" in line]
    return lines[at + 1].strip()


def test_first_start_creates_admin_and_prints_a_one_time_password_once(
    tmp_path: Path, db_url: str, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    assert not data_dir.exists()
    caplog.set_level(logging.DEBUG)

    code, output = _serve(_first_start_settings(data_dir, db_url))

    assert code == 0
    assert output.splitlines()[0].endswith(" on http://127.0.0.1:8000")
    assert "API docs: http://127.0.0.1:8000/docs" in output
    assert "created the account 'admin'" in output
    password = _one_time_password(output)
    assert len(password) >= 16
    assert output.count(password) == 1
    assert password not in caplog.text  # shown to the operator, never logged
    [(app, host, port)] = server.started
    assert (host, port) == ("127.0.0.1", 8000)
    secrets_file = data_dir / "secrets.json"  # development secrets, generated once
    assert secrets_file.stat().st_mode & 0o777 == 0o600

    with TestClient(app, raise_server_exceptions=False) as client:
        login = client.post("/api/v1/auth/login", data={"username": "admin", "password": password})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        me = client.get("/api/v1/auth/me", headers=headers).json()
        assert me["username"] == "admin" and me["password_change_required"] is True

        # Nothing else is allowed before the password is changed.
        refused = client.get("/api/v1/users", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
        assert refused.json()["detail"] == "password change required before anything else"
        assert client.get("/api/v1/studies", headers=headers).status_code == 403

        headers = _change_password(client, "admin", password, headers)
        users = client.get("/api/v1/users", headers=headers)
        assert users.status_code == 200
        assert [(u["username"], u["role"]) for u in users.json()] == [("admin", "admin")]
        assert (
            client.post("/api/v1/auth/login", data={"username": "admin", "password": password}).status_code
            == 401
        )

    # A second start (same data directory, persisted secrets) creates nobody and prints no password.
    code, again = _serve(_first_start_settings(data_dir, db_url), "--port", "8123")
    assert code == 0
    assert "http://127.0.0.1:8123" in again
    assert "one-time password" not in again and "First run" not in again
    assert password not in again
    app2 = server.started[1][0]
    with TestClient(app2, raise_server_exceptions=False) as client:
        login = client.post("/api/v1/auth/login", data={"username": "admin", "password": NEW_PASSWORD})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert len(client.get("/api/v1/users", headers=headers).json()) == 1


def test_no_admin_is_bootstrapped_when_accounts_exist(tmp_path: Path, db_url: str, server: Server) -> None:
    settings = _first_start_settings(tmp_path / "data", db_url)
    created = io.StringIO()
    assert cli.main(["user", "create", "alice", "--role", "radiologist"], out=created, settings=settings) == 0

    code, output = _serve(settings)

    assert code == 0
    assert "one-time password" not in output
    assert server.started
    app = server.started[0][0]
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/api/v1/auth/login", data={"username": "admin", "password": "x" * 20})
        assert answer.status_code == 401


def test_the_default_server_runs_ingest_jobs_in_worker_processes(
    tmp_path: Path, db_url: str, server: Server
) -> None:
    settings = _first_start_settings(tmp_path / "data", db_url)
    created = io.StringIO()
    argv = ["user", "create", "uploader", "--role", "uploader"]
    assert cli.main(argv, out=created, settings=settings) == 0
    password = created.getvalue().split()[-1]

    code, _output = _serve(settings)

    assert code == 0
    [(app, _host, _port)] = server.started
    assert isinstance(app.state.container.ingest.executor, ProcessExecutor)
    with TestClient(app, raise_server_exceptions=False) as client:
        login = client.post("/api/v1/auth/login", data={"username": "uploader", "password": password})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        headers = _change_password(client, "uploader", password, headers)
        files = [("files", ("a.dcm", to_bytes(make_ct()), "application/dicom"))]
        upload = client.post("/api/v1/dicom/upload", files=files, headers=headers)
        assert upload.status_code == 200, upload.text
        assert upload.json()["summary"]["stored"] == 1
