"""The ``onnx`` provider: any ONNX image classifier described by a model card, on ONNX Runtime.

The card (``irmsia.ai.modelcard``) gives the input spec, labels, activation, operating points and
severity bands; labels may instead come from the model's ``metadata_props`` (key ``labels``: a
JSON list or a comma-separated string). Batches run as one ``session.run``. ``threads`` sets
ONNX Runtime's intra-op threads (0: its default, one per core) and ``spinning`` its
``allow_spinning`` (turn it off when other processes compete for the cores: spinning threads
burn CPU while waiting for work). ``device`` "cuda" uses the CUDA execution provider when the
installed ONNX Runtime has it.

Needs ``pip install irmsia[ai]`` (onnxruntime); a missing library, a malformed card or a file
that is not an ONNX model raises ``ProviderUnavailable``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from irmsia.ai.base import ModelInfo, PreparedImage, Provider, ProviderOutput
from irmsia.ai.classify import ClassifierHead
from irmsia.ai.modelcard import ModelCard, load_model_card
from irmsia.ai.optional import import_optional
from irmsia.ai.preprocess import stack
from irmsia.ai.weights import file_sha256, require_file
from irmsia.errors import AIError, ProviderUnavailable


def _ort_errors(ort: Any) -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception classes (they derive from Exception directly)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented")
    found = tuple(getattr(state, name) for name in (*names, "RuntimeException") if hasattr(state, name))
    return (*found, RuntimeError, ValueError)


def labels_from_metadata(metadata: dict[str, str]) -> list[str] | None:
    """Labels from a model's ``metadata_props["labels"]``: a JSON list or comma-separated names."""
    raw = metadata.get("labels")
    if not raw:
        return None
    if raw.lstrip().startswith("["):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            raise ProviderUnavailable("the model's labels metadata is not a JSON list") from None
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise ProviderUnavailable("the model's labels metadata is not a list of names")
        return list(parsed)
    return [part.strip() for part in raw.split(",")]


class OnnxProvider(Provider):
    """An image classifier from an ONNX file and its model card."""

    name: ClassVar[str] = "onnx"

    def __init__(
        self,
        card_path: Path,
        *,
        threads: int = 0,
        spinning: bool = True,
        device: str = "cpu",
    ) -> None:
        ort = import_optional("onnxruntime", provider="onnx", extra="ai")
        self._errors = _ort_errors(ort)
        card: ModelCard = load_model_card(Path(card_path))
        model_path = require_file(
            Path(card_path).parent / card.model, "the ONNX model file named by the card"
        )
        self.card = card
        self.input_spec = card.input.spec()
        self.modalities = frozenset(card.modalities) if card.modalities else None
        self.body_parts = frozenset(card.body_parts) if card.body_parts else None
        self.model_info = ModelInfo(
            model=card.name, version=card.version, weights_sha256=file_sha256(model_path)
        )
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ProviderUnavailable(
                    "this ONNX Runtime build has no CUDA support (install onnxruntime-gpu)"
                )
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=providers)
        except self._errors:
            raise ProviderUnavailable("the model file is not a valid ONNX model") from None
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        self._input_name = card.input.name or inputs[0].name
        self._output_name = card.output.name or outputs[0].name
        if self._input_name not in {i.name for i in inputs} or self._output_name not in {
            o.name for o in outputs
        }:
            raise ProviderUnavailable("the model card names an input or output the model does not have")
        metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        labels = card.output.labels or labels_from_metadata(metadata)
        if not labels:
            raise ProviderUnavailable(
                "no labels: give output.labels in the card or labels in the model metadata"
            )
        width = next(o for o in outputs if o.name == self._output_name).shape[-1]
        if isinstance(width, int) and width != len(labels):
            raise ProviderUnavailable("the model's output width does not match the number of labels")
        self.head: ClassifierHead = card.head(labels)

    def predict(self, image: PreparedImage) -> ProviderOutput:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[PreparedImage]) -> list[ProviderOutput]:
        scores = self.run(stack(images))
        outputs = self.head.interpret(scores)
        return outputs

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores (N, labels) for a prepared batch; ``AIError`` if ONNX Runtime fails."""
        try:
            result = self._session.run(
                [self._output_name], {self._input_name: batch.astype(np.float32, copy=False)}
            )
        except self._errors:
            raise AIError("the ONNX model failed on this input") from None
        scores = np.asarray(result[0])
        return scores.reshape(scores.shape[0], -1)

    def close(self) -> None:
        self._session = None
