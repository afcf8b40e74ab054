"""CLI commands for images: ``ingest``, ``deid --what-if``, ``keys``.

File paths given on the command line are printed only with ``--show-paths`` (they often
contain patient names); otherwise objects are named by their position.
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from irmsia.config import Settings
from irmsia.errors import InvalidRequest

# pydicom and the ingest use case are imported by the commands that use them: building the
# parser (``irmsia --help``, any command) does not pay for them.
if TYPE_CHECKING:
    from irmsia.pipeline.executors import Executor
    from irmsia.pipeline.runner import Outcome

READ_CHUNK = 1 << 20


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = sub.add_parser("ingest", help="ingest DICOM files, folders (recursively) and zip archives")
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument("--workers", type=int, default=None, help="worker processes (default INGEST_WORKERS)")
    ingest.add_argument(
        "--show-paths", action="store_true", help="name rejected files by path (may show PHI)"
    )
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.set_defaults(handler=ingest_command)

    deid = sub.add_parser("deid", help="de-identification tools")
    deid.add_argument("--what-if", dest="what_if", type=Path, required=True, metavar="FILE")
    deid.set_defaults(handler=what_if_command)

    keys = sub.add_parser("keys", help="key-encryption keys").add_subparsers(
        dest="keys_command", required=True
    )
    rotate = keys.add_parser("rotate", help="add a new KEK and re-wrap every data key (blobs untouched)")
    rotate.set_defaults(handler=rotate_command)
    status = keys.add_parser("status", help="KEKs and how many data keys each wraps")
    status.set_defaults(handler=key_status_command)


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            yield path
        else:
            raise InvalidRequest(f"argument {paths.index(path) + 1} is neither a file nor a folder")


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while piece := handle.read(READ_CHUNK):
            yield piece


def ingest_command(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from tqdm import tqdm

    from irmsia.bootstrap import build_container
    from irmsia.cli.main import CLI_CTX
    from irmsia.usecases.ingest import IncomingFile

    files = list(_files(args.paths))
    if args.workers is not None and args.workers < 1:
        raise InvalidRequest("--workers must be at least 1")
    executor = "process" if (args.workers or settings.INGEST_WORKERS) > 1 else "inline"
    env = settings.as_env()
    if args.workers:
        env["INGEST_WORKERS"] = str(args.workers)
    from irmsia.config import load_settings

    container = build_container(load_settings(env), executor=executor)
    expected = [_objects_in(path) for path in files]
    try:
        bar = tqdm(total=sum(expected), unit="object", disable=args.no_progress or not sys.stderr.isatty())
        progress = _Progress(bar)
        # Each object's job is queued before the next file is read: the bar counts a file's
        # objects that did not become jobs as refused when the next file is asked for.
        ingest = replace(
            container.ingest,
            executor=_ReportingExecutor(container.ingest.executor, progress),
            group_files=1,
        )
        incoming = (
            IncomingFile(data=_read(path), label=str(n))
            for n, path in enumerate(progress.objects(files, expected), 1)
        )
        try:
            batch = ingest.submit(CLI_CTX, incoming, wait=True)
        except BaseException:
            bar.close()
            raise
        progress.close(batch.counts, len(batch.files))
    finally:
        container.close()
    counts = batch.counts
    print(
        f"{len(batch.files)} objects: {counts['stored']} stored, {counts['duplicate']} duplicate, "
        f"{counts['quarantined']} quarantined, {counts['rejected']} rejected",
        file=out,
    )
    for item in batch.files:
        if item.error:
            position = int(item.label.split("/")[0])
            where = str(files[position - 1]) if args.show_paths else f"object {item.label}"
            print(f"  rejected {where}: {item.detail} [{item.error}]", file=out)
    return 1 if counts["rejected"] else 0


def _objects_in(path: Path) -> int:
    """How many objects the use case will see in ``path``: the members of a zip, else one.

    Mirrors ``irmsia.usecases.ingest.expand_archive`` (zips recognised by content; folders and
    empty members skipped) from the archive's central directory, so the bar knows its total
    before anything is read; an unreadable archive counts as one (it is rejected as one).
    """
    from irmsia.usecases.ingest import ZIP_MAGIC

    try:
        with path.open("rb") as handle:
            if handle.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
                return 1
        with zipfile.ZipFile(path) as archive:
            return sum(1 for info in archive.infolist() if not info.is_dir() and info.file_size > 0)
    except (zipfile.BadZipFile, OSError, ValueError):
        return 1


class _Progress:
    """The progress bar: one step per object when it has finished, with the running counts.

    An object finishes when its job ends (stored, duplicate, quarantined or rejected by a
    step), or when it is refused before it becomes a job (empty, too large, broken archive).
    Job ends are reported by ``_ReportingExecutor`` (from the executor's threads); refusals
    are counted when the use case asks for the next file, since by then every object of the
    previous one has been received: those that did not become jobs were refused.
    """

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._lock = threading.Lock()
        self._counts = {"stored": 0, "duplicate": 0, "quarantined": 0, "rejected": 0}
        self.jobs = 0  # objects that became jobs so far

    def objects(self, files: list[Path], expected: list[int]) -> Iterator[Path]:
        for path, count in zip(files, expected, strict=True):
            jobs_before = self.jobs
            yield path
            refused = count - (self.jobs - jobs_before)
            if refused > 0:
                self._advance("rejected", refused)

    def job_ended(self, future: Future[Outcome]) -> None:
        from irmsia.pipeline.job import JobState

        outcome = None if future.cancelled() or future.exception() else future.result()
        if outcome is None or outcome.state is not JobState.SUCCEEDED:
            self._advance("rejected")
        else:
            self._advance(str(outcome.result.get("status", "stored")))

    def close(self, counts: dict[str, int], objects: int) -> None:
        """Show the use case's final counts (they are authoritative) and close the bar."""
        with self._lock:
            self._bar.total = objects
            self._bar.n = objects
            self._counts = {name: counts.get(name, 0) for name in self._counts}
            self._bar.set_postfix(self._counts, refresh=False)
            self._bar.close()

    def _advance(self, status: str, steps: int = 1) -> None:
        with self._lock:
            self._counts[status] = self._counts.get(status, 0) + steps
            self._bar.set_postfix(self._counts, refresh=False)
            self._bar.update(steps)


class _ReportingExecutor:
    """The container's executor, telling the progress bar when each job has ended."""

    def __init__(self, inner: Executor, progress: _Progress) -> None:
        self._inner = inner
        self._progress = progress

    def submit(self, job_id: str, payload: bytes | None = None, size: int = 0) -> Future[Outcome]:
        self._progress.jobs += 1
        future = self._inner.submit(job_id, payload, size)
        future.add_done_callback(self._progress.job_ended)  # at once if it is done already
        return future

    def close(self) -> None:
        self._inner.close()


def what_if_command(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    import pydicom
    from pydicom.errors import InvalidDicomError

    from irmsia.bootstrap import build_deid_options
    from irmsia.domain.deid import what_if

    path: Path = args.what_if
    if not path.is_file():
        raise InvalidRequest("--what-if needs a DICOM file")
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04" or zipfile.is_zipfile(io.BytesIO(data)):
        raise InvalidRequest("--what-if takes one DICOM file, not an archive")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, ValueError, EOFError, OSError):
        raise InvalidRequest("the file is not readable DICOM") from None
    options = build_deid_options(settings)
    print(f"options: {settings.DEID_OPTIONS or '(basic profile only)'}", file=out)
    print(f"{'TAG':<12} {'ACTION':<7} {'VR':<3} {'KEYWORD':<40} {'WHERE':<30} REASON", file=out)
    for action in what_if(ds, options):
        print(
            f"{action.tag_text:<12} {action.action.value:<7} {action.vr:<3} {action.keyword[:40]:<40} "
            f"{action.path[:30] or '(top level)':<30} {action.reason}",
            file=out,
        )
    return 0


def _key_admin(settings: Settings):  # type: ignore[no-untyped-def]
    from irmsia.bootstrap import build_container

    return build_container(settings, executor="inline")


def rotate_command(_args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from irmsia.cli.main import CLI_CTX

    container = _key_admin(settings)
    try:
        rotation = container.key_admin.rotate(CLI_CTX)
    finally:
        container.close()
    print(
        f"new key {rotation.new_key_id}; re-wrapped {rotation.rewrapped} data keys (no blob rewritten)",
        file=out,
    )
    return 0


def key_status_command(_args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from irmsia.cli.main import CLI_CTX

    container = _key_admin(settings)
    try:
        status = container.key_admin.status(CLI_CTX)
    finally:
        container.close()
    print(f"current key: {status.current_key_id}", file=out)
    for key_id in status.key_ids:
        print(f"  {key_id}: wraps {status.wrapped_by_key.get(key_id, 0)} data keys", file=out)
    return 0
