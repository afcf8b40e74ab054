"""Benchmark ingest end to end, through the use case and through HTTP, against Orthanc.

Run from the repository root::

    .venv/bin/python bench/ingest.py              # 1000 CT + 100 CR + 3 multi-frame (minutes)
    .venv/bin/python bench/ingest.py --quick      # a small corpus, under a minute
    .venv/bin/python bench/ingest.py --ct 300 --skip-orthanc
    .venv/bin/python bench/ingest.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/ingest.py --tmp /mnt/data   # measure on that file system

A synthetic, PHI-free corpus (smooth anatomy-like phantoms plus mild noise, so that PNG
compression behaves as on real images) is written to a temporary folder and ingested:

- through the use case: ``Ingest.submit`` with in-memory ``IncomingFile`` objects;
- through HTTP: a real uvicorn server on 127.0.0.1 started here, 4 client threads posting one
  file per request to ``POST /api/v1/dicom/upload``;

each with the inline executor (the baseline) and with 1 and 2 worker processes. The baseline is
Orthanc (Debian package ``orthanc``), started here on a loopback port with a temporary
configuration; each file is POSTed to ``/instances`` by 4 client threads. Orthanc stores and
indexes; it does not de-identify, convert to PNG or encrypt.

Printed: end-to-end instances/s and MB/s, CPU-ms per instance (server and worker processes,
from /proc), peak memory (RSS, the largest sum over the server and its workers), the same rates
as ratios of Orthanc's, and per pipeline step the rate of one busy worker (from ``Job.timings``).
"Excl. PNG" subtracts the ``render`` step (pixel rendering and PNG encoding) from the measured
CPU per instance: what storing, de-identifying, encrypting and indexing alone cost.

Everything stays on loopback; the temporary folder (corpus, databases, blobs) is deleted at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psycopg
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)
from sqlalchemy import create_engine, text

from common import bench_env  # bench/common.py: the scripts run from this folder
from irmsia.bootstrap import build_container
from irmsia.cli.main import CLI_CTX
from irmsia.config import Settings, load_settings
from irmsia.usecases.ingest import IncomingFile

CLIENTS = 4
CHUNK = 1 << 20
PASSWORD = "bench-password-not-secret"  # noqa: S105  (a throwaway account in a temporary database)
REQUEST_TIMEOUT = 300.0
START_TIMEOUT = 60.0
STEPS = ("spool", "validate", "deidentify", "serialize", "render", "store", "index")
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


# --- corpus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    kind: str  # CT | CR | MF
    path: Path
    size: int


def _ellipse(shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    return ((rows - center[0]) / radii[0]) ** 2 + ((columns - center[1]) / radii[1]) ** 2 <= 1


def _base(sop_class: str, modality: str, patient: int, study_uid: str, series_uid: str) -> Dataset:
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, sop_uid, modality
    ds.PatientName = f"Bench^Synthetic^{patient}"
    ds.PatientID = f"BENCH{patient:06d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240105"
    ds.StudyTime = ds.ContentTime = "101500"
    ds.AccessionNumber = f"ACC{patient:06d}"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstitutionName = "Synthetic Bench Hospital"
    ds.ReferringPhysicianName = "Synthetic^Referrer"
    ds.StudyDescription = "BENCH"
    ds.SeriesDescription = "BENCH"
    ds.BurnedInAnnotation = "NO"
    return ds


def _grey(ds: Dataset, stored: np.ndarray, *, signed: bool, bits_stored: int) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(stored).tobytes()


def _write(ds: Dataset, path: Path) -> int:
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size


def _ct_anatomy(z: float) -> np.ndarray:
    """An axial-chest-like phantom in HU at relative height ``z`` in 0..1."""
    shape = (512, 512)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    grow = 1.0 + 0.08 * np.sin(np.pi * z)
    hu[_ellipse(shape, (256, 256), (170 * grow, 230 * grow))] = -100.0
    hu[_ellipse(shape, (256, 256), (155 * grow, 215 * grow))] = 40.0
    lung = 60 + 40 * np.sin(np.pi * z)
    hu[_ellipse(shape, (240, 170), (lung + 20, lung))] = -850.0
    hu[_ellipse(shape, (240, 342), (lung + 20, lung))] = -850.0
    hu[_ellipse(shape, (200 + 40 * z, 280), (30, 35))] = 60.0  # heart/vessels
    hu[_ellipse(shape, (370, 256), (25, 25))] = 700.0  # vertebra
    return hu


def write_ct(folder: Path, count: int, rng: np.random.Generator) -> Iterator[Item]:
    """CT series of 100 slices each (one patient and study per series)."""
    per_series = 100
    anatomy: dict[int, np.ndarray] = {}
    study_uid = series_uid = ""
    for number in range(count):
        series, position = divmod(number, per_series)
        if position == 0:
            study_uid, series_uid = generate_uid(), generate_uid()
        level = int(10 * position / per_series)  # the anatomy changes every 10 slices
        if level not in anatomy:
            anatomy[level] = _ct_anatomy(level / 10)
        hu = anatomy[level] + rng.standard_normal((512, 512), dtype=np.float32) * np.float32(12.0)
        ds = _base(CTImageStorage, "CT", series, study_uid, series_uid)
        ds.InstanceNumber = position + 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        _grey(ds, (np.rint(hu) + 1024).clip(0, 4095).astype(np.int16), signed=True, bits_stored=12)
        path = folder / f"ct{number:05d}.dcm"
        yield Item("CT", path, _write(ds, path))


def write_cr(folder: Path, count: int, rng: np.random.Generator) -> Iterator[Item]:
    """Chest-radiograph-like 2500 x 2048 images, one study each."""
    shape = (2500, 2048)
    rows, columns = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    base = 2600.0 - 0.3 * rows + 200.0 * np.sin(columns / 300.0)
    base[_ellipse(shape, (1200, 650), (800, 380))] -= 1200.0
    base[_ellipse(shape, (1200, 1400), (800, 380))] -= 1200.0
    del rows, columns
    for number in range(count):
        value = base + rng.standard_normal(shape, dtype=np.float32) * np.float32(20.0)
        ds = _base(ComputedRadiographyImageStorage, "CR", 1000 + number, generate_uid(), generate_uid())
        ds.InstanceNumber = 1
        _grey(ds, value.clip(0, 4095).astype(np.uint16), signed=False, bits_stored=12)
        path = folder / f"cr{number:05d}.dcm"
        yield Item("CR", path, _write(ds, path))


def write_multiframe(folder: Path, count: int, rng: np.random.Generator) -> Iterator[Item]:
    """Ultrasound-like cine loops: 30 frames of 480 x 640 8-bit grey."""
    shape = (480, 640)
    sector = _ellipse(shape, (0, 320), (470, 400)).astype(np.float32) * 90.0
    for number in range(count):
        frames = np.empty((30, *shape), dtype=np.uint8)
        for index in range(30):
            blob = _ellipse(shape, (240 + 30 * np.sin(index / 5), 320), (60, 90)) * 60.0
            noisy = sector + blob + rng.standard_normal(shape, dtype=np.float32) * np.float32(8.0)
            frames[index] = (noisy * (sector > 0)).clip(0, 255).astype(np.uint8)
        ds = _base(UltrasoundMultiFrameImageStorage, "US", 2000 + number, generate_uid(), generate_uid())
        ds.InstanceNumber = 1
        ds.NumberOfFrames, ds.FrameTime = 30, 33.3
        ds.FrameIncrementPointer = 0x00181063
        _grey(ds, frames, signed=False, bits_stored=8)
        path = folder / f"mf{number:05d}.dcm"
        yield Item("MF", path, _write(ds, path))


def write_corpus(folder: Path, ct: int, cr: int, multiframe: int) -> list[Item]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(20240105)
    items = [
        *write_ct(folder, ct, rng),
        *write_cr(folder, cr, rng),
        *write_multiframe(folder, multiframe, rng),
    ]
    # Interleave the kinds as a PACS would send them, deterministically.
    order = np.random.default_rng(7).permutation(len(items))
    return [items[i] for i in order]


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while piece := handle.read(CHUNK):
            yield piece


# --- process measurements ---------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
    except OSError:
        return []
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def _cpu_and_rss(pid: int) -> tuple[float, int] | None:
    """(CPU seconds used so far, resident bytes) of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3; utime 14, stime 15, rss 24 (1-based, man proc).
    return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[21]) * _PAGE


class Monitor:
    """Samples a process tree's CPU time and resident memory in a background thread."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self.peak_rss = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Monitor:
        self._sample()
        self._start = dict(self._last)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def cpu_seconds(self) -> float:
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._last.items())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        total = 0
        for pid in _tree(self._root):
            measured = _cpu_and_rss(pid)
            if measured is None:
                continue
            self._last[pid] = measured[0]
            total += measured[1]
        self.peak_rss = max(self.peak_rss, total)


# --- runs -------------------------------------------------------------------------------

KINDS = ("CT", "CR", "MF")


@dataclass
class Phase:
    """One kind of object ingested by one configuration."""

    instances: int
    megabytes: float
    seconds: float
    cpu_seconds: float
    peak_rss: int
    failed: int
    steps: dict[str, list[float]]  # step -> ms of each succeeded job

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / max(self.instances, 1)

    def step_ms(self, step: str) -> float | None:
        values = self.steps.get(step)
        return statistics.fmean(values) if values else None


@dataclass
class Run:
    name: str
    phases: dict[str, Phase] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return sum(p.instances for p in self.phases.values()) / sum(p.seconds for p in self.phases.values())

    @property
    def megabytes_per_second(self) -> float:
        return sum(p.megabytes for p in self.phases.values()) / sum(p.seconds for p in self.phases.values())

    @property
    def peak_rss(self) -> int:
        return max(p.peak_rss for p in self.phases.values())

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.phases.values())


def _by_kind(items: Sequence[Item]) -> dict[str, list[Item]]:
    return {kind: [item for item in items if item.kind == kind] for kind in KINDS}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Databases:
    """Where each run's index lives: SQLite in its data folder (the default), or a fresh
    PostgreSQL database per run, created through ``admin`` and dropped at the end."""

    def __init__(self, admin: str | None) -> None:
        self.admin = admin
        self._created: list[str] = []

    def url(self, data_dir: Path) -> str | None:
        if self.admin is None:
            return None  # bench_env's SQLite file
        name = f"irmsia_bench_{secrets.token_hex(6)}"
        with psycopg.connect(self.admin, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return f"{self.admin.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)

    def drop_all(self) -> None:
        if self.admin is None:
            return
        with psycopg.connect(self.admin, autocommit=True) as connection:
            for name in self._created:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


DATABASES = Databases(None)


def _env(data_dir: Path, executor: str, workers: int) -> dict[str, str]:
    env = bench_env(data_dir, INGEST_EXECUTOR=executor, INGEST_WORKERS=str(workers))
    url = DATABASES.url(data_dir)
    if url is not None:
        env["DATABASE_URL"] = url
    return env


def _settings(env: dict[str, str]) -> Settings:
    return load_settings(env, env_file=None)


def _jobs(database_url: str) -> dict[str, tuple[str, str]]:
    """Every job: id -> (state, timings JSON)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                row[0]: (row[1], row[2])
                for row in connection.execute(text("SELECT id, state, timings FROM jobs"))
            }
    finally:
        engine.dispose()


def _phase(
    items: Sequence[Item], seconds: float, monitor: Monitor, failures: int, jobs: dict[str, tuple[str, str]]
) -> Phase:
    steps: dict[str, list[float]] = {}
    failed = failures
    for state, timings in jobs.values():
        if state != "succeeded":
            failed += 1
            continue
        for step, ms in json.loads(timings or "{}").items():
            steps.setdefault(step, []).append(float(ms))
    return Phase(
        len(items),
        sum(item.size for item in items) / 1e6,
        seconds,
        monitor.cpu_seconds,
        monitor.peak_rss,
        failed,
        steps,
    )


def _new_jobs(database_url: str, before: Collection[str]) -> dict[str, tuple[str, str]]:
    return {job_id: job for job_id, job in _jobs(database_url).items() if job_id not in before}


def run_usecase(name: str, items: Sequence[Item], root: Path, executor: str, workers: int) -> Run:
    env = _env(root / f"data-{len(os.listdir(root))}", executor, workers)
    settings = _settings(env)
    container = build_container(settings, upgrade=True)
    run = Run(name)
    try:
        if executor == "process":  # wait until every worker has started and answered
            for future in [container.executor.submit(f"warm-up-{n}") for n in range(workers)]:
                future.exception()
        for kind, group in _by_kind(items).items():
            if not group:
                continue
            before = _jobs(settings.database_url)
            files = (IncomingFile(data=_chunks(item.path), label=str(n)) for n, item in enumerate(group, 1))
            with Monitor(os.getpid()) as monitor:
                started = time.perf_counter()
                batch = container.ingest.submit(CLI_CTX, files, wait=True)
                seconds = time.perf_counter() - started
            rejected = sum(1 for item in batch.files if item.error and item.job_id is None)
            run.phases[kind] = _phase(
                group, seconds, monitor, rejected, _new_jobs(settings.database_url, before)
            )
    finally:
        container.close()
    return run


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not start in time")


Post = Callable[[httpx.Client, Item], bool]


def _post_all(items: Sequence[Item], post: Post) -> tuple[float, int]:
    """POST every item from ``CLIENTS`` threads; return (seconds, failures)."""
    work: queue.SimpleQueue[Item] = queue.SimpleQueue()
    for item in items:
        work.put(item)
    failures: list[int] = []

    def client() -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT) as http:
            while True:
                try:
                    item = work.get_nowait()
                except queue.Empty:
                    return
                if not post(http, item):
                    failures.append(1)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, len(failures)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_http(name: str, items: Sequence[Item], root: Path, executor: str, workers: int) -> Run:
    env = _env(root / f"data-{len(os.listdir(root))}", executor, workers)
    settings = _settings(env)
    setup = build_container(settings, upgrade=True, executor="inline")
    try:
        setup.accounts.create(CLI_CTX, "bench", "uploader", PASSWORD)
    finally:
        setup.close()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "from irmsia.cli.main import entrypoint; entrypoint()"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, env={**os.environ, **env}, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run = Run(name)
    try:
        _wait_until_up(f"{base}/healthz", process)
        login = httpx.post(f"{base}/api/v1/auth/login", data={"username": "bench", "password": PASSWORD})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

        def post(http: httpx.Client, item: Item) -> bool:
            files = {"files": (item.path.name, item.path.read_bytes(), "application/dicom")}
            response = http.post(f"{base}/api/v1/dicom/upload", files=files, headers=headers)
            return response.status_code == 200 and response.json()["summary"]["stored"] == 1

        def reject(http: httpx.Client, _item: Item) -> bool:
            files = {"files": ("warm-up.dcm", b"not DICOM" * 64, "application/dicom")}
            return http.post(f"{base}/api/v1/dicom/upload", files=files, headers=headers).status_code == 422

        # Warm-up: one bad file per worker, at once, so that every worker has started and run a
        # job before the clock starts; their failed jobs are not counted.
        _post_all(items[:workers], reject)
        for kind, group in _by_kind(items).items():
            if not group:
                continue
            before = _jobs(settings.database_url)
            with Monitor(process.pid) as monitor:
                seconds, failures = _post_all(group, post)
            run.phases[kind] = _phase(
                group, seconds, monitor, failures, _new_jobs(settings.database_url, before)
            )
    finally:
        _stop(process)
    return run


def run_orthanc(items: Sequence[Item], root: Path) -> Run | None:
    binary = shutil.which("Orthanc")
    if binary is None:
        print("Orthanc is not installed (apt-get install orthanc): the comparison is skipped.")
        return None
    folder = root / "orthanc"
    folder.mkdir()
    port = _free_port()
    config = {
        "Name": "bench",
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": _free_port(),
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "HttpTimeout": 300,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen(
        [binary, str(folder / "orthanc.json")],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    run = Run("Orthanc REST")
    try:
        _wait_until_up(f"{base}/system", process)

        def post(http: httpx.Client, item: Item) -> bool:
            response = http.post(
                f"{base}/instances",
                content=item.path.read_bytes(),
                headers={"Content-Type": "application/dicom"},
            )
            return response.status_code == 200

        for kind, group in _by_kind(items).items():
            if not group:
                continue
            with Monitor(process.pid) as monitor:
                seconds, failures = _post_all(group, post)
            run.phases[kind] = _phase(group, seconds, monitor, failures, {})
    finally:
        _stop(process)
    return run


# --- report -----------------------------------------------------------------------------


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(runs: Sequence[Run], orthanc: Run | None, corpus: str) -> None:
    """Print the tables: rates per kind, CPU per CT slice with and without PNG, memory, steps."""
    print(f"\nCorpus: {corpus}; HTTP: {CLIENTS} client threads, one file per request; {os.cpu_count()} CPUs")
    # PNG cost: the render step of the single-threaded run, where it is pure computation.
    inline = next((run for run in runs if run.name == "use case inline"), None)
    png = {kind: phase.step_ms("render") for kind, phase in inline.phases.items()} if inline else {}
    head = (
        f"{'run':<20} {'CT/s':>7} {'CR/s':>6} {'MF/s':>6} {'all/s':>7} {'MB/s':>6} "
        f"{'CPU ms/CT':>9} {'excl.PNG':>8} {'RSS MB CT/CR':>13} {'fail':>4}"
    )
    print(head)
    print("-" * len(head))
    for run in [*runs, *([orthanc] if orthanc else [])]:
        rates = {kind: run.phases[kind].rate if kind in run.phases else None for kind in KINDS}
        ct = run.phases.get("CT")
        ct_png = png.get("CT")
        without = ct.cpu_ms - ct_png if ct and ct_png is not None and run is not orthanc else None
        rss = "/".join(
            f"{run.phases[k].peak_rss / 1e6:.0f}" if k in run.phases else "-" for k in ("CT", "CR")
        )
        print(
            f"{run.name:<20} {_cell(rates['CT'], '7.1f')} {_cell(rates['CR'], '6.2f')} {_cell(rates['MF'], '6.2f')} "
            f"{run.rate:7.1f} {run.megabytes_per_second:6.1f} {_cell(ct.cpu_ms if ct else None, '9.1f')} "
            f"{_cell(without, '8.1f')} {rss:>13} {run.failed:4d}"
        )
    if orthanc is not None and "CT" in orthanc.phases:
        base = orthanc.phases["CT"]
        print(f"\nCT slices vs Orthanc ({base.rate:.0f}/s, {base.cpu_ms:.1f} CPU-ms each; higher is better):")
        print(f"{'run':<20} {'rate':>7} {'CPU':>7} {'CPU excl. PNG':>14}")
        for run in runs:
            ct = run.phases.get("CT")
            if ct is None:
                continue
            ct_png = png.get("CT")
            without = ct.cpu_ms - ct_png if ct_png is not None else None
            print(
                f"{run.name:<20} {_ratio(ct.rate, base.rate):>7} {_ratio(base.cpu_ms, ct.cpu_ms):>7} "
                f"{_ratio(base.cpu_ms, without):>14}"
            )
    print(
        "\nPer step, mean ms per object (from Job.timings; one worker's wall time, so it grows with contention)"
    )
    for kind in KINDS:
        named = [run for run in runs if kind in run.phases and run.phases[kind].steps]
        if not named:
            continue
        print(f"{kind:<12}" + "".join(f"{run.name:>21}" for run in named))
        for step in STEPS:
            cells = []
            for run in named:
                ms = run.phases[kind].step_ms(step)
                mb = run.phases[kind].megabytes / run.phases[kind].instances
                cells.append(f"{ms:6.1f} ({mb * 1000 / ms:5.0f} MB/s)" if ms else "-")
            print(f"  {step:<10}" + "".join(f"{cell:>21}" for cell in cells))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ct", type=int, default=1000, help="512 x 512 CT slices (default 1000)")
    parser.add_argument("--cr", type=int, default=100, help="2500 x 2048 radiographs (default 100)")
    parser.add_argument("--multiframe", type=int, default=3, help="30-frame cine loops (default 3)")
    parser.add_argument("--quick", action="store_true", help="a small corpus: 60 CT, 4 CR, 1 multi-frame")
    parser.add_argument("--skip-http", action="store_true", help="only the use-case runs")
    parser.add_argument("--skip-orthanc", action="store_true", help="no Orthanc baseline")
    parser.add_argument("--workers", default="1,2", help="worker-process counts to run (default 1,2)")
    parser.add_argument(
        "--tmp",
        metavar="DIR",
        help="where the corpus, databases and blobs go (default: the system's temporary folder); "
        "choose the file system to measure",
    )
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="index in PostgreSQL instead of SQLite: a fresh database per run, created and dropped "
        "through this admin URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="also run the thread executor (INGEST_EXECUTOR=thread) with each worker count",
    )
    args = parser.parse_args(argv)
    global DATABASES
    DATABASES = Databases(
        args.postgres.replace("postgresql+psycopg://", "postgresql://", 1) if args.postgres else None
    )
    if args.quick:
        args.ct, args.cr, args.multiframe = 60, 4, 1
    workers = [int(n) for n in args.workers.split(",") if n]
    configs = [("inline", "inline", 1), *((f"process x{n}", "process", n) for n in workers)]
    if args.threads:
        configs += [(f"thread x{n}", "thread", n) for n in workers]
    root = Path(tempfile.mkdtemp(prefix="irmsia-bench-", dir=args.tmp))
    try:
        started = time.perf_counter()
        items = write_corpus(root / "corpus", args.ct, args.cr, args.multiframe)
        total = sum(item.size for item in items) / 1e6
        corpus = f"{args.ct} CT + {args.cr} CR + {args.multiframe} multi-frame = {len(items)} files, {total:.0f} MB"
        print(f"{corpus}, written in {time.perf_counter() - started:.1f} s", flush=True)
        runs: list[Run] = []
        for label, executor, count in configs:
            runs.append(run_usecase(f"use case {label}", items, root, executor, count))
            print(f"  {runs[-1].name}: {runs[-1].rate:.1f} inst/s", flush=True)
        if not args.skip_http:
            for label, executor, count in configs:
                runs.append(run_http(f"HTTP {label}", items, root, executor, count))
                print(f"  {runs[-1].name}: {runs[-1].rate:.1f} inst/s", flush=True)
        orthanc = None if args.skip_orthanc else run_orthanc(items, root)
        if orthanc is not None:
            print(f"  {orthanc.name}: {orthanc.rate:.1f} inst/s", flush=True)
        report(runs, orthanc, corpus + (", index in PostgreSQL" if args.postgres else ", index in SQLite"))
    finally:
        DATABASES.drop_all()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
