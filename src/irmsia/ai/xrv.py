"""The ``torchxrayvision`` provider: torchxrayvision's chest X-ray DenseNet-121 (18 labels), offline.

Architecture and label lists come from the installed ``torchxrayvision`` package
(``xrv.models.DenseNet(weights=None)``); the weights come only from a local file, read with
``torch.load(weights_only=True)``, so a weights file cannot run code and nothing is downloaded.
Accepted files: a ``state_dict`` (``torch.save(model.state_dict(), path)``), or a dict with
``state_dict`` and optional ``labels`` (18 names, "" for untrained) and ``op_threshs`` (18
floats, NaN for untrained). Without those, the labels and operating points of ``weights_name``
in torchxrayvision's own table are used. torchxrayvision's published ``.pt`` files are whole
pickled models, which ``weights_only`` refuses: convert them once, on a trusted machine, to a
state dict (see the AI notes in the README).

Pre-processing is the published one: the 8-bit display image (MONOCHROME1 already inverted by
the renderer) scaled to [-1024, 1024] (``xrv.datasets.normalize``), centre-cropped to a square,
resized to 224 x 224, one channel. Labels the weights leave untrained are reported as not
available (None).

Why the import is special: ``import torchxrayvision`` imports torchvision, pandas and
scikit-image at import time, and PyPI's torchvision does not import next to the CPU build of
torch. Only ``torchxrayvision/models.py`` is needed for the DenseNet, and it needs none of them
for ``weights=None``; when the full import is not possible, ``load_xrv_models`` executes that
one file with placeholder modules for its unused imports, visible only while it runs, and
restores the process's warning filters (models.py turns every warning off, process-wide).

Needs ``pip install irmsia[ai-torch]`` (torch; torchxrayvision installed with ``--no-deps``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import pickle
import sys
import threading
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from irmsia.ai.base import InputSpec, ModelInfo, PreparedImage, Provider, ProviderOutput
from irmsia.ai.classify import ClassifierHead
from irmsia.ai.optional import import_optional
from irmsia.ai.preprocess import stack
from irmsia.ai.weights import file_sha256, require_file
from irmsia.errors import AIError, ProviderUnavailable

DEFAULT_WEIGHTS = "densenet121-res224-all"
XRV_INPUT = InputSpec(
    representation="display",
    size=(224, 224),
    resize="center_crop",
    channels=1,
    value_range=(-1024.0, 1024.0),
)
_FULL_IMPORT_NEEDS = ("torchvision", "pandas", "skimage", "imageio")
_load_lock = threading.Lock()
_models_module: types.ModuleType | None = None


def _default_pathologies(package_dir: Path) -> list[str]:
    """torchxrayvision's ``datasets.default_pathologies``, read from its source without running it."""
    tree = ast.parse((package_dir / "datasets.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "default_pathologies" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, list):
                return [str(item) for item in value]
    raise ProviderUnavailable("this torchxrayvision version has no default pathology list")


def _full_import_possible() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in _FULL_IMPORT_NEEDS)


def _exec_models_only(package_dir: Path) -> types.ModuleType:
    """Run torchxrayvision/models.py alone, with placeholders for imports DenseNet does not use."""
    pathologies = _default_pathologies(package_dir)
    package = types.ModuleType("torchxrayvision")
    package.__dict__["__path__"] = [str(package_dir)]
    datasets = types.ModuleType("torchxrayvision.datasets")
    datasets.__dict__["default_pathologies"] = pathologies
    placeholders = {
        "torchxrayvision": package,
        "torchxrayvision.datasets": datasets,
        "torchxrayvision.utils": types.ModuleType("torchxrayvision.utils"),
    }
    for name in ("torchvision", "requests"):
        if importlib.util.find_spec(name) is None:
            placeholders[name] = types.ModuleType(name)
    spec = importlib.util.spec_from_file_location("torchxrayvision.models", package_dir / "models.py")
    if spec is None or spec.loader is None:
        raise ProviderUnavailable("torchxrayvision's models module cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    saved = {name: sys.modules.get(name) for name in (*placeholders, "torchxrayvision.models")}
    sys.modules.update(placeholders)
    try:
        spec.loader.exec_module(module)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return module


def load_xrv_models() -> types.ModuleType:
    """torchxrayvision's ``models`` module, loaded once; ``ProviderUnavailable`` if not installed."""
    global _models_module
    import_optional("torch", provider="torchxrayvision", extra="ai-torch")
    with _load_lock:
        if _models_module is not None:
            return _models_module
        spec = importlib.util.find_spec("torchxrayvision")
        if spec is None or not spec.submodule_search_locations:
            raise ProviderUnavailable("install irmsia[ai-torch] for the torchxrayvision provider")
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        # models.py calls warnings.filterwarnings("ignore") at import: keep the process's filters.
        with warnings.catch_warnings():
            module: types.ModuleType | None = None
            if _full_import_possible():
                try:
                    module = importlib.import_module("torchxrayvision.models")
                except (ImportError, RuntimeError, OSError):
                    module = None  # e.g. torchvision built for another torch: use models.py alone
            if module is None:
                try:
                    module = _exec_models_only(package_dir)
                except (ImportError, OSError, SyntaxError) as exc:
                    raise ProviderUnavailable("torchxrayvision's models module cannot be loaded") from exc
        _models_module = module
        return module


def _read_weights(torch: Any, path: Path) -> tuple[dict[str, Any], list[str] | None, list[float] | None]:
    """(state dict, labels or None, operating points or None) from a weights_only-safe file."""
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError, EOFError) as exc:
        raise ProviderUnavailable(
            "the weights file is not a state dict that torch.load(weights_only=True) accepts"
        ) from exc
    if not isinstance(loaded, dict):
        raise ProviderUnavailable("the weights file does not hold a state dict")
    wrapped = "state_dict" in loaded
    labels = loaded.get("labels") if wrapped else None
    points = loaded.get("op_threshs") if wrapped else None
    state = dict(loaded["state_dict"]) if wrapped else dict(loaded)
    buffer = state.pop("op_threshs", None)  # saved by models built with weights=...
    if points is None and buffer is not None:
        points = buffer
    if points is not None:
        points = [float(value) for value in (points.tolist() if hasattr(points, "tolist") else points)]
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise ProviderUnavailable("the weights file's labels are not a list of names")
    return state, labels, points


def build_densenet(
    weights_path: Path | None, weights_name: str = DEFAULT_WEIGHTS
) -> tuple[Any, ClassifierHead]:
    """The DenseNet-121 in eval mode (random weights when ``weights_path`` is None) and its head.

    Raises ``ProviderUnavailable`` for a missing library, a missing or unreadable weights file,
    or weights that do not fit the architecture.
    """
    torch = import_optional("torch", provider="torchxrayvision", extra="ai-torch")
    models = load_xrv_models()
    model = models.DenseNet(weights=None)
    default_labels = list(model.targets)
    table = models.model_urls.get(weights_name, {})
    labels: list[str] = list(table.get("labels", default_labels))
    points: list[float] | None = table.get("op_threshs")
    if weights_path is not None:
        state, file_labels, file_points = _read_weights(torch, require_file(weights_path, "the weights file"))
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise ProviderUnavailable("the weights do not fit the DenseNet-121 architecture") from exc
        labels = file_labels or labels
        points = file_points if file_points is not None else points
    model.eval()
    if len(labels) != len(default_labels):
        raise ProviderUnavailable("the weights' labels do not match the model's 18 outputs")
    head = ClassifierHead(
        labels=tuple(labels),
        activation="sigmoid",
        operating_points=None if points is None else tuple(float(p) for p in points),
        display_names=tuple(default_labels),
    )
    return model, head


class TorchXRayVisionProvider(Provider):
    """Chest radiograph DenseNet-121; CR and DX images of the chest (or of unknown body part)."""

    name: ClassVar[str] = "torchxrayvision"
    modalities = frozenset({"CR", "DX"})
    body_parts = frozenset({"CHEST"})
    input_spec = XRV_INPUT

    def __init__(
        self,
        weights_path: Path,
        *,
        weights_name: str = DEFAULT_WEIGHTS,
        threads: int = 0,
        device: str = "cpu",
    ) -> None:
        self._torch = import_optional("torch", provider="torchxrayvision", extra="ai-torch")
        if threads > 0:
            self._torch.set_num_threads(threads)
        if device == "cuda" and not self._torch.cuda.is_available():
            raise ProviderUnavailable("no CUDA device is available to torch")
        path = Path(weights_path)
        self._model, self.head = build_densenet(path, weights_name)
        self._device = device
        self._model.to(device)
        self.model_info = ModelInfo(
            model=f"torchxrayvision-densenet121-{weights_name}",
            version=_xrv_version(),
            weights_sha256=file_sha256(path),
        )

    def predict(self, image: PreparedImage) -> ProviderOutput:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[PreparedImage]) -> list[ProviderOutput]:
        return self.head.interpret(self.logits(stack(images)))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits (N, 18) for a prepared batch (N, 1, 224, 224)."""
        torch = self._torch
        try:
            with torch.inference_mode():
                tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device)
                out = self._model(tensor)
            return np.asarray(out.float().cpu().numpy())
        except RuntimeError:
            raise AIError("the DenseNet failed on this input") from None

    def close(self) -> None:
        self._model = None


def _xrv_version() -> str:
    try:
        from importlib.metadata import version

        return f"torchxrayvision-{version('torchxrayvision')}"
    except ImportError:
        return "torchxrayvision"


def export_onnx(
    weights_path: Path | None,
    out_path: Path,
    *,
    weights_name: str = DEFAULT_WEIGHTS,
    opset: int = 17,
) -> Path:
    """Export the DenseNet (with ``weights_path``, or random weights if None) to ONNX + model card.

    Writes ``out_path`` (logits, dynamic batch) and ``out_path.with_suffix(".json")``: a model
    card for the ``onnx`` provider with the same pre-processing, labels and operating points, so
    both providers give the same probabilities. Returns the card's path.
    """
    torch = import_optional("torch", provider="torchxrayvision", extra="ai-torch")
    model, head = build_densenet(weights_path, weights_name)
    example = torch.zeros((1, 1, 224, 224), dtype=torch.float32)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # torch 2.9+ deprecates the TorchScript exporter and the new one needs onnxscript; the
    # TorchScript exporter works on DenseNet and its deprecation warnings are expected here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(out_path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    points = head.operating_points
    card = {
        "name": f"torchxrayvision-densenet121-{weights_name}",
        "version": _xrv_version(),
        "model": out_path.name,
        "description": "torchxrayvision DenseNet-121 exported to ONNX by irmsia.ai.xrv.export_onnx",
        "intended_use": "research only; not a medical device",
        "modalities": ["CR", "DX"],
        "body_parts": ["CHEST"],
        "input": {
            "name": "image",
            "representation": "display",
            "size": [224, 224],
            "resize": "center_crop",
            "channels": 1,
            "value_range": [-1024.0, 1024.0],
        },
        "output": {
            "name": "logits",
            "activation": "sigmoid",
            "labels": list(head.labels),
            "display_names": list(head.display_names or head.labels),
            "operating_points": None if points is None else [None if math.isnan(p) else p for p in points],
        },
    }
    card_path = out_path.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2), encoding="utf-8")
    return card_path
