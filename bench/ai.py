"""Benchmark AI inference and what IRMSIA adds around it: DenseNet-121 at 224 x 224.

Run from the repository root::

    .venv/bin/python bench/ai.py --quick --no-spinning   # batches 1 and 8, a sanity run
    .venv/bin/python bench/ai.py --no-spinning           # batches 1, 8 and 32
    .venv/bin/python bench/ai.py --device cuda           # on a machine with a GPU
    .venv/bin/python bench/ai.py --size 2048             # full-size radiographs: rendering costs more

The model is torchxrayvision's chest X-ray architecture with random weights (speed does not depend
on them), exported to ONNX by ``irmsia.ai.xrv.export_onnx`` (needs irmsia[ai-torch]), or taken
from ``--card`` (a model card that export wrote). IRMSIA is built the way the server builds it
(``irmsia.bootstrap.build_container``: ``AI_PROVIDER=onnx`` with that card, a temporary SQLite
database and data directory), and synthetic chest-like CR images (``--size`` pixels a side, with
a VOI window as modalities write one) are ingested through the ingest use case first (not timed).
Per batch size, each figure is the best (smallest) of interleaved repetitions, since background
load on a shared machine only adds time:

- ``ort bare``: ``session.run`` on a ready tensor in a plain ONNX Runtime session with the same
  threads, spinning and device: the baseline, "model time";
- ``onnx path``: ``AnalysisRunner.analyze_datasets`` on the stored, de-identified datasets: render,
  pre-process, the ``onnx`` provider in a worker thread under the deadline, post-process, validate
  and label;
- ``use case``: ``Analyze.analyze_datasets``: the same, then ``Analyze.store_many``, which writes
  the batch's results in one transaction (a row each, one ledger append for their digests, an
  audit record each and one ledger append for those): from de-identified datasets, as the ingest
  pipeline holds them, to stored, registered results;
- ``torch``: the same DenseNet in PyTorch eager mode under ``inference_mode`` (when torch is
  installed); ``--no-spinning`` also sets ``OMP_WAIT_POLICY=PASSIVE`` for it.

What IRMSIA adds around the model is timed directly: ``pre/post`` is the ONNX path with the
model's scores cached (rendering, pre-processing, thread hand-off, post-processing, validation,
labelling) and ``storage`` is ``store_many`` alone, each as a share of model time; ``overhead`` is
their sum (aim: at most 10 %), and ``ratio`` = model / (model + pre/post), the ONNX path's
throughput over bare ONNX Runtime's (aim: at least 0.9). Both aims are decided on these direct
timings because on a shared machine a difference of two timings of the model swings by tens of
percent; that difference is printed too, as ``measured`` ratio (onnx path / ort bare images/s) and
overhead ((use case - ort bare) / ort bare), as a cross-check that moves with background load.
CPU ms per image (process CPU time, all threads) is for information; with ``--device cuda`` the
model runs on the GPU and only the wall-clock figures describe it.

One more line times ``POST /api/v1/ai/analyze`` 's use case (``Analyze.analyze``: also the audited
read of the stored object, its decryption and parsing) at batch 1, for information.

Both aims are checked at every batch size: PASS/FAIL is printed and the exit status is 1 on a
FAIL (0 with ``--no-check``); 2 means the benchmark could not run.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from common import bench_env  # bench/common.py: the scripts run from this folder
from irmsia.ai.inputs import image_input
from irmsia.ai.onnxmodel import OnnxProvider
from irmsia.ai.preprocess import prepare, stack
from irmsia.bootstrap import Container, build_container
from irmsia.cli.main import CLI_CTX
from irmsia.config import load_settings
from irmsia.usecases.ingest import IncomingFile

OVERHEAD_AIM = 0.10  # the runner's and use case's own time, as a share of model time
RATIO_AIM = 0.9  # the ONNX path's throughput over bare ONNX Runtime's


class BenchError(Exception):
    """The benchmark cannot measure anything (exit status 2)."""


@dataclass(frozen=True)
class Timing:
    """Wall-clock and process CPU seconds (all threads) of one call, or the best of several."""

    wall: float
    cpu: float


def _timed(fn: Callable[[], Any]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def _best(timings: Sequence[Timing]) -> Timing:
    """The shortest wall time and the smallest CPU time: background load only ever adds to them."""
    return Timing(min(t.wall for t in timings), min(t.cpu for t in timings))


def _best_of(fn: Callable[[], Any], repeat: int) -> Timing:
    return _best([_timed(fn) for _ in range(repeat)])


# --- synthetic radiographs -----------------------------------------------------------------------


def _ellipse(size: int, center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    rows, columns = np.ogrid[:size, :size]
    return ((rows - center[0]) / radii[0]) ** 2 + ((columns - center[1]) / radii[1]) ** 2 <= 1


def chest_cr(number: int, size: int, rng: np.random.Generator) -> bytes:
    """A chest-radiograph-like 12-bit CR (air, body, two lung fields, noise) as a DICOM file."""
    s = size / 512
    image = np.full((size, size), 300.0, dtype=np.float32)
    image[_ellipse(size, (256 * s, 256 * s), (220 * s, 200 * s))] = 2600.0
    image[_ellipse(size, (240 * s, 170 * s), (140 * s, 70 * s))] = 1300.0
    image[_ellipse(size, (240 * s, 342 * s), (140 * s, 70 * s))] = 1300.0
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(20.0)
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = ComputedRadiographyImageStorage, sop_uid, "CR"
    ds.PatientName = f"Bench^Synthetic^{number}"
    ds.PatientID = f"BENCH{number:06d}"
    ds.PatientBirthDate = "19700101"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240105"
    ds.StudyTime = ds.ContentTime = "101500"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.BurnedInAnnotation = "NO"
    ds.WindowCenter, ds.WindowWidth = 1500, 3000  # modalities write a VOI window into radiographs
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.clip(image, 0, 4095).astype(np.uint16).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# --- the system under test -----------------------------------------------------------------------


def _container(data_dir: Path, card: Path, threads: int, spinning: bool, device: str) -> Container:
    env = bench_env(
        data_dir,
        INGEST_EXECUTOR="inline",
        AI_PROVIDER="onnx",
        AI_ONNX_MODEL_CARD=str(card),
        AI_ONNX_THREADS=str(threads),
        AI_ONNX_SPINNING="true" if spinning else "false",
        AI_DEVICE=device,
        AI_TIMEOUT_SECONDS="600",
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    return build_container(load_settings(env, env_file=None), upgrade=True)


def _ingest(container: Container, count: int, size: int) -> tuple[list[str], list[Dataset]]:
    """Store ``count`` radiographs; their image ids and de-identified datasets, as stored."""
    rng = np.random.default_rng(0)
    files = [IncomingFile(data=iter([chest_cr(n, size, rng)]), label=str(n)) for n in range(count)]
    batch = container.ingest.submit(CLI_CTX, files, wait=True)
    ids = [item.result.get("image_id") for item in batch.files]
    if any(item.result.get("status") != "stored" for item in batch.files) or not all(ids):
        problems = sorted({item.error or str(item.result.get("status")) for item in batch.files})
        raise BenchError(f"ingest of the benchmark images failed: {', '.join(problems)}")
    datasets: list[Dataset] = []
    for image_id in ids:
        download = container.retrieve.download(CLI_CTX, str(image_id), "dicom")
        datasets.append(pydicom.dcmread(io.BytesIO(b"".join(download.chunks))))
    return [str(i) for i in ids], datasets


def _bare_session(model_path: Path, threads: int, spinning: bool, device: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(model_path), options, providers=providers)


def _torch_model(threads: int, device: str) -> Any | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    from irmsia.ai.xrv import build_densenet

    if threads > 0:
        torch.set_num_threads(threads)
    model, _ = build_densenet(None)
    return model.to(device).eval()


def _torch_run(model: Any, batch: np.ndarray, device: str) -> None:
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(batch).to(device))
        out.cpu()


# --- one batch size --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    batch: int
    bare: Timing  # one batch
    path: Timing
    use_case: Timing
    prepost: Timing
    storage: Timing
    torch: Timing | None

    @property
    def overhead(self) -> float:
        """Pre/post-processing, validation and storage, timed directly, as a share of model time."""
        return (self.prepost.wall + self.storage.wall) / self.bare.wall

    @property
    def ratio(self) -> float:
        """The ONNX path's throughput over bare ONNX Runtime's: model time over model + pre/post time."""
        return self.bare.wall / (self.bare.wall + self.prepost.wall)

    @property
    def measured_ratio(self) -> float:
        return self.bare.wall / self.path.wall

    @property
    def measured_overhead(self) -> float:
        return (self.use_case.wall - self.bare.wall) / self.bare.wall

    def row(self) -> str:
        n = self.batch
        rates = [self.bare, self.path, self.use_case]
        text = f"{n:>5}" + "".join(f"{n / t.wall:>10.1f}" for t in rates)
        text += f"{n / self.torch.wall:>8.1f}" if self.torch else ""
        text += f"{1000 * self.bare.cpu / n:>8.1f}{1000 * self.use_case.cpu / n:>9.1f}"
        text += f"{1000 * self.torch.cpu / n:>8.1f}" if self.torch else ""
        shares = (self.prepost.wall / self.bare.wall, self.storage.wall / self.bare.wall, self.overhead)
        text += "".join(f"{100 * share:>9.1f}%" for share in shares)
        return (
            text + f"{self.ratio:>7.2f}x {self.measured_ratio:>6.2f}x {100 * self.measured_overhead:>7.1f}%"
        )

    @staticmethod
    def header(torch: bool) -> str:
        extra = 8 if torch else 0
        rates = f"{'ort bare':>10}{'onnx path':>10}{'use case':>10}" + (f"{'torch':>8}" if torch else "")
        cpu = f"{'model':>8}{'use case':>9}" + (f"{'torch':>8}" if torch else "")
        return (
            f"{'':>5}{'images/s':^{30 + extra}}{'CPU ms/image':^{17 + extra}}"
            f"{'outside the model, share of model time':^{47}}{'measured':^{16}}\n"
            f"{'batch':>5}{rates}{cpu}{'pre/post':>10}{'storage':>10}{'overhead':>10}{'ratio':>8}"
            f"{'ratio':>8}{'overhead':>9}"
        )


class Bench:
    def __init__(
        self,
        container: Container,
        session: Any,
        ids: Sequence[str],
        datasets: Sequence[Dataset],
        torch_model: Any | None,
        device: str,
        repeat: int,
    ) -> None:
        self.container = container
        self.analyze = container.analyze
        self.runner = container.analyze.runner
        provider = self.runner.provider("onnx")
        assert isinstance(provider, OnnxProvider)
        self.provider = provider
        self.session = session
        self.ids = list(ids)
        self.datasets = list(datasets)
        self.torch_model = torch_model
        self.device = device
        self.repeat = repeat

    def _analyse(self, datasets: Sequence[Dataset]) -> list[Any]:
        results = self.runner.analyze_datasets(datasets)
        failed = sorted({r.error.code for r in results if r.error is not None})
        if failed:
            raise BenchError(f"the onnx provider returned errors ({', '.join(failed)}): nothing to measure")
        return results

    def _use_case(self, ids: Sequence[str], datasets: Sequence[Dataset]) -> None:
        stored = self.analyze.analyze_datasets(CLI_CTX, list(zip(ids, datasets, strict=True)))
        if any(item.result.status != "ok" for item in stored):
            raise BenchError("the onnx provider returned errors: nothing to measure")

    def _cached(self, scores: np.ndarray, fn: Callable[[], Any]) -> Timing:
        """``fn``'s best timing with the model's scores cached: the time spent outside the model."""
        model_run = self.provider.run
        self.provider.run = lambda batch: scores
        try:
            fn()
            return _best_of(fn, max(self.repeat, 5))
        finally:
            self.provider.run = model_run

    def _feed(self, datasets: Sequence[Dataset]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        images = [image_input(ds) for ds in datasets]
        tensor = stack([prepare(image, self.provider.input_spec) for image in images]).astype(np.float32)
        return tensor, {self.session.get_inputs()[0].name: tensor}

    def measure(self, n: int) -> Line:
        ids, datasets = self.ids[:n], self.datasets[:n]
        tensor, feed = self._feed(datasets)
        self.session.run(None, feed)  # warm-up: allocations, kernel selection
        self._use_case(ids, datasets)
        bare, path, use_case = [], [], []
        for _ in range(self.repeat):  # interleaved, so background load hits each alike
            bare.append(_timed(lambda: self.session.run(None, feed)))
            path.append(_timed(lambda: self._analyse(datasets)))
            use_case.append(_timed(lambda: self._use_case(ids, datasets)))
        prepost = self._cached(self.provider.run(tensor), lambda: self._analyse(datasets))
        pairs = list(zip(ids, self._analyse(datasets), strict=True))
        storage = _best_of(lambda: self.analyze.store_many(CLI_CTX, pairs), max(self.repeat, 5))
        torch_timing = None
        if self.torch_model is not None:
            _torch_run(self.torch_model, tensor, self.device)
            torch_timing = _best_of(lambda: _torch_run(self.torch_model, tensor, self.device), self.repeat)
        return Line(n, _best(bare), _best(path), _best(use_case), prepost, storage, torch_timing)

    def api_path(self) -> tuple[Timing, Timing]:
        """``Analyze.analyze`` (what POST /ai/analyze runs) at batch 1, and the bare model's timing."""
        image_id = self.ids[0]
        _, feed = self._feed(self.datasets[:1])
        self.analyze.analyze(CLI_CTX, image_id)
        bare, through = [], []
        for _ in range(self.repeat):
            bare.append(_timed(lambda: self.session.run(None, feed)))
            through.append(_timed(lambda: self.analyze.analyze(CLI_CTX, image_id)))
        return _best(through), _best(bare)


# --- main ------------------------------------------------------------------------------------------


def _check(lines: Sequence[Line]) -> bool:
    worst_overhead = max(lines, key=lambda line: line.overhead)
    worst_ratio = min(lines, key=lambda line: line.ratio)
    overhead_ok = worst_overhead.overhead <= OVERHEAD_AIM
    ratio_ok = worst_ratio.ratio >= RATIO_AIM
    print(
        f"{'PASS' if overhead_ok else 'FAIL'}: overhead (pre/post-processing, validation, storage) at most "
        f"{100 * worst_overhead.overhead:.1f}% of model time (batch {worst_overhead.batch}; aim <= "
        f"{100 * OVERHEAD_AIM:.0f}%)"
    )
    print(
        f"{'PASS' if ratio_ok else 'FAIL'}: ONNX path at least {worst_ratio.ratio:.2f}x bare ONNX Runtime "
        f"(batch {worst_ratio.batch}; aim >= {RATIO_AIM}x)"
    )
    return overhead_ok and ratio_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="batches 1 and 8, fewer repetitions")
    parser.add_argument(
        "--repeat", type=int, default=0, help="repetitions per measurement (default 7, quick 3)"
    )
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for ONNX Runtime and torch")
    parser.add_argument(
        "--no-spinning",
        action="store_true",
        help="allow_spinning=0, i.e. AI_ONNX_SPINNING=false (other processes compete for the cores)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", type=int, default=512, help="side of the stored radiographs in pixels")
    parser.add_argument("--card", type=Path, help="an exported model card to use instead of exporting one")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch measurements")
    parser.add_argument("--no-check", action="store_true", help="report only: exit 0 whatever the aims")
    args = parser.parse_args(argv)
    batches = (1, 8) if args.quick else (1, 8, 32)
    repeat = args.repeat or (3 if args.quick else 7)
    spinning = not args.no_spinning
    if not spinning:
        # PyTorch's OpenMP threads spin while they wait too; beside other work that slowed it
        # 6-20-fold here. The variable must be set before torch loads its OpenMP runtime.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is not installed: pip install irmsia[ai]", file=sys.stderr)
        return 2
    import onnxruntime

    root = Path(tempfile.mkdtemp(prefix="irmsia-bench-ai-"))
    container: Container | None = None
    try:
        card = args.card
        if card is None:
            if importlib.util.find_spec("torch") is None:
                print(
                    "exporting the DenseNet needs torch (irmsia[ai-torch]); or pass --card", file=sys.stderr
                )
                return 2
            from irmsia.ai.xrv import export_onnx

            started = time.perf_counter()
            card = export_onnx(None, root / "model" / "densenet121.onnx")
            print(f"exported DenseNet-121 (random weights) to ONNX in {time.perf_counter() - started:.1f} s")
        card = card.resolve()
        ort_device = args.device
        if ort_device == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            print("this ONNX Runtime has no CUDA execution provider (onnxruntime-gpu): it runs on the CPU")
            ort_device = "cpu"
        torch_device = args.device
        if torch_device == "cuda" and importlib.util.find_spec("torch") is not None:
            import torch

            if not torch.cuda.is_available():
                print("torch sees no CUDA device: PyTorch runs on the CPU")
                torch_device = "cpu"

        container = _container(root / "data", card, args.threads, spinning, ort_device)
        started = time.perf_counter()
        ids, datasets = _ingest(container, max(batches), args.size)
        print(
            f"ingested {len(ids)} CR {args.size}x{args.size} into SQLite in {time.perf_counter() - started:.1f} s"
        )
        provider = container.analyze.runner.provider("onnx")
        assert isinstance(provider, OnnxProvider)
        session = _bare_session(card.parent / provider.card.model, args.threads, spinning, ort_device)
        torch_model = None if args.no_torch else _torch_model(args.threads, torch_device)
        bench = Bench(container, session, ids, datasets, torch_model, torch_device, repeat)
        print(
            f"DenseNet-121 224x224, ONNX Runtime {onnxruntime.__version__} on {ort_device}"
            + (f", torch on {torch_device}" if torch_model is not None else "")
            + f", {args.threads} threads, allow_spinning={int(spinning)}, {repeat} repetitions, "
            "best of the repetitions"
        )
        print(Line.header(torch_model is not None))
        lines = []
        for n in batches:
            lines.append(bench.measure(n))
            print(lines[-1].row(), flush=True)
        through, bare = bench.api_path()
        print(
            f"POST /ai/analyze use case (+ audited read, decrypt, parse), batch 1: {1 / through.wall:.1f} "
            f"images/s, {100 * (through.wall - bare.wall) / bare.wall:.1f}% over model time (measured, "
            "for information)"
        )
        passed = _check(lines)
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        if container is not None:
            container.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0 if passed or args.no_check else 1


if __name__ == "__main__":
    raise SystemExit(main())
