"""The ``huggingface`` provider: a local Hugging Face model directory, offline.

Two kinds of model, told apart by the directory's ``config.json``:

- image classification (``*ForImageClassification``): ``AutoImageProcessor`` +
  ``AutoModelForImageClassification``; labels from ``id2label``, sigmoid when the config's
  ``problem_type`` is multi-label, else softmax; labels such as "normal" or "No Finding" are
  not findings;
- image-to-text (vision encoder-decoder, GIT, BLIP, ...): ``model.generate()`` (transformers 5
  removed the image-to-text pipeline), decoded into ``report_text``; no findings of its own.

Everything loads with ``local_files_only=True`` from ``model_dir``: nothing is downloaded. Set
``HF_HUB_OFFLINE=1`` in the environment as well so no library around it tries the hub.
Needs ``pip install irmsia[ai-torch]`` (torch and transformers).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from irmsia.ai.base import InputSpec, ModelInfo, PreparedImage, Provider, ProviderOutput
from irmsia.ai.classify import ClassifierHead
from irmsia.ai.optional import import_optional
from irmsia.ai.weights import files_sha256
from irmsia.errors import AIError, ProviderUnavailable

Task = Literal["auto", "classification", "image-to-text"]
_NORMAL_NAMES = frozenset({"normal", "no finding", "no_finding", "no findings"})
_TEXT_MODEL_TYPES = frozenset({"vision-encoder-decoder", "git", "blip", "blip-2", "pix2struct"})
# Files one of which holds a tokenizer's vocabulary. Without any, transformers may build an empty
# tokenizer silently (GIT's processor does), and every caption would then decode to nothing.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
)
# What transformers raises for a directory it cannot load (missing or inconsistent files).
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError)


def _task_of(config: Any) -> Literal["classification", "image-to-text"]:
    architectures = list(getattr(config, "architectures", None) or [])
    if any(name.endswith("ForImageClassification") for name in architectures):
        return "classification"
    if getattr(config, "model_type", "") in _TEXT_MODEL_TYPES or any(
        name.endswith(("ForConditionalGeneration", "ForCausalLM", "ForImageTextToText"))
        or name == "VisionEncoderDecoderModel"
        for name in architectures
    ):
        return "image-to-text"
    raise ProviderUnavailable("the model is neither an image classifier nor an image-to-text model")


class HuggingFaceProvider(Provider):
    """An image classifier or image-to-text model from a local directory."""

    name: ClassVar[str] = "huggingface"
    # The model's own image processor resizes and normalises: hand it RGB display pixels.
    input_spec = InputSpec(representation="display", channels=3, layout="HWC", dtype="uint8")

    def __init__(
        self,
        model_dir: Path,
        *,
        task: Task = "auto",
        device: str = "cpu",
        threads: int = 0,
        max_new_tokens: int = 64,
    ) -> None:
        self._torch = import_optional("torch", provider="huggingface", extra="ai-torch")
        transformers = import_optional("transformers", provider="huggingface", extra="ai-torch")
        directory = Path(model_dir)
        if not (directory / "config.json").is_file():
            raise ProviderUnavailable("the Hugging Face model directory has no config.json")
        weights = sorted([*directory.glob("*.safetensors"), *directory.glob("*.bin")])
        if not weights:
            raise ProviderUnavailable("the Hugging Face model directory has no weights files")
        if threads > 0:
            self._torch.set_num_threads(threads)
        if device == "cuda" and not self._torch.cuda.is_available():
            raise ProviderUnavailable("no CUDA device is available to torch")
        self._device = device
        self._max_new_tokens = max_new_tokens
        try:
            config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
            self.task = _task_of(config) if task == "auto" else task
            if self.task == "classification":
                self._load_classifier(transformers, directory, config)
            else:
                self._load_generator(transformers, directory)
        except _LOAD_ERRORS as exc:
            raise ProviderUnavailable("the Hugging Face model directory cannot be loaded") from exc
        self._model.to(device).eval()
        self.model_info = ModelInfo(
            model=f"huggingface:{directory.name}",
            version=str(getattr(config, "transformers_version", None) or "local"),
            weights_sha256=files_sha256(weights),
        )

    def _image_processor(self, transformers: Any, directory: Path) -> Any:
        # Without torchvision, ask for the PIL backend directly instead of being warned about it.
        backend = None if importlib.util.find_spec("torchvision") else "pil"
        kwargs: dict[str, Any] = {"local_files_only": True}
        if backend:
            kwargs["backend"] = backend
        return transformers.AutoImageProcessor.from_pretrained(str(directory), **kwargs)

    def _load_classifier(self, transformers: Any, directory: Path, config: Any) -> None:
        self._processor = self._image_processor(transformers, directory)
        self._model = transformers.AutoModelForImageClassification.from_pretrained(
            str(directory), local_files_only=True
        )
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        labels = tuple(id2label[i] for i in sorted(id2label))
        multi = getattr(config, "problem_type", None) == "multi_label_classification"
        self.head = ClassifierHead(
            labels=labels,
            activation="sigmoid" if multi else "softmax",
            normal_labels=frozenset(label for label in labels if label.lower() in _NORMAL_NAMES),
        )
        self._tokenizer: Any = None

    def _load_generator(self, transformers: Any, directory: Path) -> None:
        if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
            raise ProviderUnavailable("the image-to-text model directory has no tokenizer files")
        self._model = transformers.AutoModelForImageTextToText.from_pretrained(
            str(directory), local_files_only=True
        )
        if (directory / "processor_config.json").is_file():
            processor = transformers.AutoProcessor.from_pretrained(str(directory), local_files_only=True)
            self._processor = getattr(processor, "image_processor", processor)
            self._tokenizer = getattr(processor, "tokenizer", processor)
        else:
            self._processor = self._image_processor(transformers, directory)
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(directory), local_files_only=True
            )

    def predict(self, image: PreparedImage) -> ProviderOutput:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[PreparedImage]) -> list[ProviderOutput]:
        pixels = [np.ascontiguousarray(image.tensor) for image in images]
        torch = self._torch
        try:
            inputs = self._processor(images=pixels, return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self._device)
            with torch.inference_mode():
                if self.task == "classification":
                    logits = self._model(pixel_values=pixel_values).logits
                    return self.head.interpret(logits.float().cpu().numpy())
                generated = self._model.generate(
                    pixel_values=pixel_values, max_new_tokens=self._max_new_tokens, do_sample=False
                )
            texts = self._tokenizer.batch_decode(generated, skip_special_tokens=True)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise AIError("the Hugging Face model failed on this input") from exc
        outputs = []
        for text in texts:
            cleaned = " ".join(str(text).split())
            if not cleaned:
                raise AIError("the image-to-text model produced no text")
            outputs.append(ProviderOutput(report_text=cleaned))
        return outputs

    def close(self) -> None:
        self._model = None
