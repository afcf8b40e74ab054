"""Benchmark AI inference: DenseNet-121 at 224 x 224 (torchxrayvision's chest X-ray architecture).

Run from the repository root::

    .venv/bin/python bench/ai.py --quick             # batches 1 and 8, a few repetitions
    .venv/bin/python bench/ai.py                     # batches 1, 8 and 32
    .venv/bin/python bench/ai.py --threads 2 --no-spinning
    .venv/bin/python bench/ai.py --device cuda       # on a machine with a GPU

The model has random weights (speed does not depend on them): it is built with torchxrayvision's
architecture and exported to ONNX by ``irmsia.ai.xrv.export_onnx`` (needs irmsia[ai-torch]), or
taken from ``--card`` (a model card written by that export). Reported per batch size, each the
median over interleaved repetitions, in images per second:

- ``ort bare``: ``session.run`` on a ready tensor, a plain ONNX Runtime session with the same
  options: the baseline;
- ``runner``: ``AnalysisRunner.analyze_batch`` through the ``onnx`` provider, from rendered
  512 x 512 display images to validated, labelled results (pre-processing, worker thread,
  deadline, post-processing, validation);
- ``torch``: the same DenseNet in PyTorch under ``inference_mode`` (when torch is installed).

``ratio`` is runner/baseline throughput (aim: at least 0.9) and ``overhead`` the runner's extra
time as a share of the model's (aim: at most 10 %). Both compare two timings of the model and so
move with background load on a shared machine; ``own cost`` is steadier: the runner timed with the
model's scores cached (pre-processing, thread hand-off, post-processing, validation and nothing
else) as a share of the bare model time, and ``preproc`` the pre-processing alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from irmsia.ai.base import ImageInput, ImageMeta
from irmsia.ai.onnxmodel import OnnxProvider
from irmsia.ai.preprocess import prepare, stack
from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool


def _median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _images(count: int, size: int = 512) -> list[ImageInput]:
    rng = np.random.default_rng(0)
    rows, columns = np.ogrid[:size, :size]
    body = (((rows - size / 2) / (size * 0.42)) ** 2 + ((columns - size / 2) / (size * 0.38)) ** 2) <= 1
    images = []
    for _ in range(count):
        display = np.where(body, 170, 20) + rng.normal(0, 6, (size, size))
        images.append(
            ImageInput(
                display=np.clip(display, 0, 255).astype(np.uint8),
                meta=ImageMeta(modality="CR", body_part="CHEST", rows=size, columns=size),
            )
        )
    return images


def _bare_session(model_path: Path, threads: int, spinning: bool, device: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    )
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


def _own_cost(
    provider: OnnxProvider, runner: AnalysisRunner, images: list[ImageInput], tensor: np.ndarray, repeat: int
) -> float:
    """Seconds the runner spends on a batch besides the model: its scores are cached for this."""
    scores = provider.run(tensor)
    model_run = provider.run
    provider.run = lambda batch: scores  # type: ignore[method-assign]
    try:
        runner.analyze_batch(images)
        return _median_seconds(lambda: runner.analyze_batch(images), max(repeat, 5))
    finally:
        provider.run = model_run  # type: ignore[method-assign]


def _measure(
    batch_size: int,
    provider: OnnxProvider,
    session: Any,
    runner: AnalysisRunner,
    torch_model: Any | None,
    repeat: int,
    device: str,
) -> tuple[str, float]:
    """One table line for ``batch_size`` and the runner's own cost as a share of the model's time."""
    images = _images(batch_size)
    tensor = stack([prepare(image, provider.input_spec) for image in images]).astype(np.float32)
    feed = {session.get_inputs()[0].name: tensor}
    session.run(None, feed)  # warm-up: allocations, kernel selection
    runner.analyze_batch(images)
    bare_times, runner_times = [], []
    for _ in range(repeat):  # interleaved, so background load hits both alike
        bare_times.append(_median_seconds(lambda: session.run(None, feed), 1))
        runner_times.append(_median_seconds(lambda: runner.analyze_batch(images), 1))
    bare, through = statistics.median(bare_times), statistics.median(runner_times)
    preprocess = _median_seconds(lambda: [prepare(image, provider.input_spec) for image in images], repeat)
    own = _own_cost(provider, runner, images, tensor, repeat)
    line = (
        f"{batch_size:>5} {batch_size / bare:>9.1f} {batch_size / through:>9.1f} "
        f"{bare / through:>5.2f}x {100 * (through - bare) / bare:>8.1f}% {100 * own / bare:>8.1f}% "
        f"{100 * preprocess / bare:>7.1f}%"
    )
    if torch_model is not None:
        _torch_run(torch_model, tensor, device)
        seconds = _median_seconds(lambda: _torch_run(torch_model, tensor, device), repeat)
        line += f" {batch_size / seconds:>8.1f}"
    return line, own / bare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="batches 1 and 8, fewer repetitions")
    parser.add_argument(
        "--repeat", type=int, default=0, help="repetitions per measurement (default 5, quick 3)"
    )
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for ONNX Runtime and torch")
    parser.add_argument(
        "--no-spinning", action="store_true", help="allow_spinning=0 (other processes compete)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--card", type=Path, help="an exported model card to use instead of exporting one")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch measurements")
    args = parser.parse_args(argv)
    batches = (1, 8) if args.quick else (1, 8, 32)
    repeat = args.repeat or (3 if args.quick else 5)
    spinning = not args.no_spinning

    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is not installed: pip install irmsia[ai]", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        card = args.card
        if card is None:
            if importlib.util.find_spec("torch") is None:
                print(
                    "exporting the DenseNet needs torch (irmsia[ai-torch]); or pass --card", file=sys.stderr
                )
                return 2
            from irmsia.ai.xrv import export_onnx

            started = time.perf_counter()
            card = export_onnx(None, Path(tmp) / "densenet121.onnx")
            print(f"exported DenseNet-121 (random weights) to ONNX in {time.perf_counter() - started:.1f} s")
        import onnxruntime

        ort_device = args.device
        if ort_device == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            print(
                "this ONNX Runtime has no CUDA execution provider (onnxruntime-gpu): ONNX Runtime runs on the CPU"
            )
            ort_device = "cpu"
        provider = OnnxProvider(card, threads=args.threads, spinning=spinning, device=ort_device)
        session = _bare_session(card.parent / provider.card.model, args.threads, spinning, ort_device)
        runner = AnalysisRunner(
            ProviderPool({"onnx": lambda: provider}),
            Router("onnx"),
            clock=lambda: datetime.now(UTC),
            timeout=600,
        )
        torch_model = None if args.no_torch else _torch_model(args.threads, args.device)
        print(
            f"DenseNet-121 224x224, ONNX Runtime on {ort_device}, torch on {args.device}, {args.threads} threads, "
            f"allow_spinning={int(spinning)}, {repeat} repetitions, images/s (median)"
        )
        header = f"{'batch':>5} {'ort bare':>9} {'runner':>9} {'ratio':>6} {'overhead':>9} {'own cost':>9} {'preproc':>8}"
        print(header + (f" {'torch':>8}" if torch_model is not None else ""))
        worst = float("-inf")
        try:
            for batch_size in batches:
                line, own_share = _measure(
                    batch_size, provider, session, runner, torch_model, repeat, args.device
                )
                worst = max(worst, own_share)
                print(line)
        finally:
            runner.close()
        print(f"largest runner own cost: {100 * worst:.1f}% of model time (aim: at most 10%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
