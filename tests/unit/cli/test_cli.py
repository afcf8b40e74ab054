"""The CLI runs in-process: users, database, configuration."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from irmsia import __version__
from irmsia.cli.main import main
from tests.conftest import make_settings


@pytest.fixture
def cli(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path}/cli.db")

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        code = main(list(argv), out=out, settings=settings)
        return code, out.getvalue()

    return run


def test_user_lifecycle(cli, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    code, out = cli("user", "create", "alice", "--role", "radiologist")
    assert code == 0
    assert "created alice (radiologist)" in out
    assert "one-time password" in out
    code, out = cli("user", "list")
    assert code == 0 and "alice" in out and "radiologist" in out and "active" in out
    assert cli("user", "set-role", "alice", "clinician")[0] == 0
    assert "clinician" in cli("user", "list")[1]
    assert cli("user", "disable", "alice")[0] == 0
    assert "disabled" in cli("user", "list")[1]
    assert cli("user", "disable", "alice", "--enable")[0] == 0
    code, out = cli("user", "reset-password", "alice")
    assert code == 0 and "one-time password" in out


def test_errors_are_one_line_messages_with_nonzero_status(cli, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert cli("user", "create", "bob", "--role", "clinician")[0] == 0
    code, _ = cli("user", "create", "bob", "--role", "clinician")
    assert code == 1
    assert capsys.readouterr().err.strip() == "error: a user with that username already exists"
    code, _ = cli("user", "disable", "nobody")
    assert code == 1
    assert "no such user" in capsys.readouterr().err


def test_usage_errors_return_2(cli, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert cli("user", "create", "carol", "--role", "emperor")[0] == 2
    assert "invalid choice" in capsys.readouterr().err
    assert cli()[0] == 2


def test_db_upgrade_and_config_check(cli) -> None:  # type: ignore[no-untyped-def]
    code, out = cli("db", "upgrade")
    assert code == 0 and "database at revision" in out
    code, out = cli("config", "check")
    assert code == 0
    assert "SECRET_KEY=********" in out and "configuration OK" in out


def test_bad_configuration_is_reported_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IRMSIA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ENCRYPTION_KEY", "abc")
    monkeypatch.chdir(tmp_path)
    assert main(["config", "check"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: ENCRYPTION_KEY must be 64 hex characters (32 bytes); got 3 characters"
    )


def test_help_and_version_do_not_load_the_object_graph() -> None:
    # A fresh interpreter: this one has imported everything already. ``--help`` and
    # ``--version`` build the parser only; pydicom and the container are imported by the
    # commands that need them.
    code = (
        "import sys\n"
        "from irmsia.cli.main import main\n"
        "assert main(['--version']) == 0\n"
        "print(sorted(m for m in ('irmsia.bootstrap', 'pydicom', 'irmsia.usecases.ingest') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"irmsia {__version__}", "[]"]
