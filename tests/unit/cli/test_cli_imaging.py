"""``irmsia ingest``, ``irmsia deid --what-if`` and ``irmsia keys`` run in-process."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

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
