"""``irmsia ingest``, ``irmsia deid --what-if`` and ``irmsia keys`` run in-process."""

from __future__ import annotations

import io
import re
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy
import tqdm

from irmsia.cli.main import main
from tests.conftest import make_settings
from tests.factories import PHI, make_cr, make_ct, to_bytes


@pytest.fixture
def settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path / "data", f"sqlite:///{tmp_path}/cli.db", INGEST_WORKERS="1")


def run(settings, *argv: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    return main(list(argv), out=out, settings=settings), out.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / PHI["PatientName"].replace("^", "_")
    (root / "sub").mkdir(parents=True)
    (root / "a.dcm").write_bytes(to_bytes(make_ct()))
    (root / "sub" / "b.dcm").write_bytes(to_bytes(make_cr()))
    (root / "notes.txt").write_bytes(b"hello, not dicom")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("c.dcm", to_bytes(make_ct()))
    (root / "more.zip").write_bytes(buffer.getvalue())
    return root


def test_ingest_folder_reports_a_summary_without_paths(settings, folder: Path) -> None:  # type: ignore[no-untyped-def]
    code, out = run(settings, "ingest", str(folder), "--no-progress")
    assert code == 1  # one object was rejected
    assert "4 objects: 3 stored, 0 duplicate, 0 quarantined, 1 rejected" in out
    assert "rejected object" in out
    assert "Canaryname" not in out and "notes.txt" not in out
    code, out = run(settings, "ingest", str(folder), "--no-progress", "--show-paths")
    assert "0 stored, 3 duplicate" in out
    assert "notes.txt" in out


def test_ingest_with_worker_processes(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for n in range(4):
        (tmp_path / f"{n}.dcm").write_bytes(to_bytes(make_ct(seed=n)))
    code, out = run(
        settings, "ingest", *(str(tmp_path / f"{n}.dcm") for n in range(4)), "--workers", "2", "--no-progress"
    )
    assert code == 0, out
    assert "4 objects: 4 stored" in out


def test_ingest_missing_path_is_a_clear_error(
    settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    code, _ = run(settings, "ingest", str(tmp_path / "nope"))
    assert code == 1
    assert "neither a file nor a folder" in capsys.readouterr().err


def test_what_if_lists_actions_without_values(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.dcm"
    path.write_bytes(to_bytes(make_ct()))
    code, out = run(settings, "deid", "--what-if", str(path))
    assert code == 0
    assert "PatientName" in out and "PatientID" in out and "StudyInstanceUID" in out
    lines = {line.split()[3]: line.split()[1] for line in out.splitlines()[2:] if len(line.split()) > 3}
    assert lines["StudyInstanceUID"] == "U"
    assert lines["InstitutionName"] in {"X", "Z", "D"}
    for value in PHI.values():
        assert value not in out


def test_what_if_on_garbage_is_a_clear_error(
    settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.dcm"
    path.write_bytes(b"PK\x03\x04 not really")
    assert run(settings, "deid", "--what-if", str(path))[0] == 1
    assert "not an archive" in capsys.readouterr().err


def test_keys_rotate_and_status(settings, folder: Path) -> None:  # type: ignore[no-untyped-def]
    run(settings, "ingest", str(folder / "a.dcm"), "--no-progress")
    code, out = run(settings, "keys", "status")
    assert code == 0 and "current key: local-1" in out
    code, out = run(settings, "keys", "rotate")
    assert code == 0 and "new key local-2" in out
    assert "current key: local-2" in run(settings, "keys", "status")[1]


# --- the progress bar -------------------------------------------------------------------------


class _Terminal(io.StringIO):
    """Stands for a terminal on stderr, so that the progress bar is drawn."""

    def isatty(self) -> bool:
        return True


def _finished_jobs(settings) -> int:  # type: ignore[no-untyped-def]
    engine = sqlalchemy.create_engine(settings.database_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            query = sqlalchemy.text("SELECT count(*) FROM jobs WHERE state IN ('succeeded', 'failed')")
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def bar_steps(settings, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """(bar position, jobs finished in the database) right after every step of the bar.

    The bar is tqdm's own; this only looks at it after each update. Reading the database
    from the thread that advanced the bar tells whether the object counted had finished.
    """
    steps: list[tuple[int, int]] = []

    class WatchedBar(tqdm.tqdm):  # type: ignore[type-arg]
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            steps.append((int(self.n), _finished_jobs(settings)))
            return shown

    monkeypatch.setattr(tqdm, "tqdm", WatchedBar)
    return steps


def _on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> _Terminal:
    # Inside the test itself: pytest sets sys.stderr again between fixtures and the test.
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    return terminal


def _last_bar(stderr: str) -> tuple[int, int, str]:
    """Position, total and postfix of the bar as last drawn."""
    drawn = re.findall(r"(\d+)/(\d+) \[[^\]]*?(?:, ([a-z]+=[^\]]*))?\]", stderr)
    assert drawn, stderr
    done, total, postfix = drawn[-1]
    return int(done), int(total), postfix


def test_progress_counts_each_object_as_it_finishes_zip_members_one_by_one(  # type: ignore[no-untyped-def]
    settings, tmp_path: Path, bar_steps: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "a.dcm").write_bytes(to_bytes(make_ct(seed=1)))
    (root / "empty.dcm").write_bytes(b"")  # refused before it becomes a job
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(3):
            archive.writestr(f"m{n}.dcm", to_bytes(make_ct(seed=10 + n)))
        archive.writestr("folder/", b"")
    (root / "more.zip").write_bytes(buffer.getvalue())
    (root / "notes.txt").write_bytes(b"hello, not dicom")  # rejected by the validate step
    (root / "sub" / "b.dcm").write_bytes(to_bytes(make_cr()))

    terminal = _on_a_terminal(monkeypatch)
    code, out = run(settings, "ingest", str(root))

    assert code == 1
    assert "7 objects: 5 stored, 0 duplicate, 0 quarantined, 2 rejected" in out
    # Files in order: a (job), empty (refused), three zip members (jobs), notes (job), b (job).
    # Each step comes once the object it counts has finished: after its job has ended, or,
    # for the refused file, once the next file is asked for.
    assert bar_steps == [(1, 1), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5), (7, 6)]
    done, total, postfix = _last_bar(terminal.getvalue())
    assert (done, total) == (7, 7)
    assert postfix == "stored=5, duplicate=0, quarantined=0, rejected=2"


@pytest.mark.slow
def test_progress_with_worker_processes_never_runs_ahead_of_finished_jobs(  # type: ignore[no-untyped-def]
    settings, tmp_path: Path, bar_steps: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(4):
        (tmp_path / f"{n}.dcm").write_bytes(to_bytes(make_ct(seed=n)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.dcm", to_bytes(make_ct(seed=7)))
        archive.writestr("y.dcm", to_bytes(make_ct(seed=8)))
    (tmp_path / "z.zip").write_bytes(buffer.getvalue())
    paths = [str(tmp_path / f"{n}.dcm") for n in range(4)] + [str(tmp_path / "z.zip")]

    terminal = _on_a_terminal(monkeypatch)
    code, out = run(settings, "ingest", *paths, "--workers", "2")

    assert code == 0, out
    assert "6 objects: 6 stored" in out
    # Files are read far faster than worker processes finish them: a bar that counted files
    # as they were read would be ahead of the finished jobs here.
    assert bar_steps and all(position <= finished for position, finished in bar_steps), bar_steps
    assert [position for position, _ in bar_steps] == sorted(position for position, _ in bar_steps)
    done, total, postfix = _last_bar(terminal.getvalue())
    assert (done, total) == (6, 6)
    assert postfix == "stored=6, duplicate=0, quarantined=0, rejected=0"
