"""Model cards: the small declarative file that makes any ONNX image classifier usable.

A card (JSON, or YAML when PyYAML is installed) sits next to its model and says what the model
expects, what it outputs and what it is for::

    name: chest-densenet121
    version: "1.0"
    model: densenet121.onnx          # relative to the card
    intended_use: research only; not a medical device
    modalities: [CR, DX]
    body_parts: [CHEST]
    input:
      size: [224, 224]
      resize: center_crop
      channels: 1
      value_range: [-1024, 1024]
    output:
      activation: sigmoid            # sigmoid (multi-label), softmax (one class) or none
      labels: [Atelectasis, Consolidation, ...]   # or the model's metadata_props "labels"
      operating_points: [0.07, 0.04, ...]          # optional; null marks an untrained label
      bands:                                        # optional; default 0.5 low, 0.7 moderate, 0.9 high
        - {min_probability: 0.5, severity: low}
      normal_labels: ["No Finding"]

Unknown keys are rejected so typos surface. ``load_model_card`` raises ``ProviderUnavailable``
with the first problem, never a parser traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from irmsia.ai.base import InputSpec
from irmsia.ai.classify import DEFAULT_BANDS, ClassifierHead, SeverityBand
from irmsia.ai.schema import Severity
from irmsia.errors import InvalidRequest, ProviderUnavailable

_CARD_LIMIT = 1 << 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CardInput(_Strict):
    """The input section: ``InputSpec`` fields, plus the model's input tensor ``name``."""

    name: str | None = None
    representation: Literal["display", "modality"] = "display"
    size: tuple[int, int] | None = None
    resize: Literal["stretch", "center_crop", "pad"] = "stretch"
    channels: Literal[1, 3] = 1
    value_range: tuple[float, float] | None = None
    modality_clip: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: Literal["CHW", "HWC"] = "CHW"

    def spec(self) -> InputSpec:
        return InputSpec(
            representation=self.representation,
            size=self.size,
            resize=self.resize,
            channels=self.channels,
            value_range=self.value_range,
            modality_clip=self.modality_clip,
            mean=self.mean,
            std=self.std,
            layout=self.layout,
        )


class CardBand(_Strict):
    min_probability: float = Field(ge=0.0, le=1.0)
    severity: Severity


class CardOutput(_Strict):
    """The output section: how to read the scores (see ``irmsia.ai.classify``)."""

    name: str | None = None
    activation: Literal["sigmoid", "softmax", "none"] = "sigmoid"
    labels: list[str] | None = None
    operating_points: list[float | None] | None = None
    bands: list[CardBand] | None = None
    per_label_bands: dict[str, list[CardBand]] = Field(default_factory=dict)
    normal_labels: list[str] = Field(default_factory=list)
    display_names: list[str] | None = None


class ModelCard(_Strict):
    """A whole card; ``model`` is the ONNX file's path relative to the card."""

    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1)
    description: str = ""
    intended_use: str = Field(min_length=1)
    modalities: list[str] | None = None
    body_parts: list[str] | None = None
    input: CardInput = CardInput()
    output: CardOutput = CardOutput()

    @field_validator("modalities", "body_parts")
    @classmethod
    def _upper(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [item.strip().upper() for item in value]

    def head(self, labels: list[str]) -> ClassifierHead:
        """The classifier head for ``labels`` (from the card, or the model's metadata)."""
        points = self.output.operating_points
        return ClassifierHead(
            labels=tuple(labels),
            activation=self.output.activation,
            operating_points=None
            if points is None
            else tuple(float("nan") if p is None else p for p in points),
            bands=_bands(self.output.bands) if self.output.bands else DEFAULT_BANDS,
            per_label_bands={label: _bands(bands) for label, bands in self.output.per_label_bands.items()},
            normal_labels=frozenset(self.output.normal_labels),
            display_names=None if self.output.display_names is None else tuple(self.output.display_names),
        )


def _bands(items: list[CardBand]) -> tuple[SeverityBand, ...]:
    return tuple(SeverityBand(item.min_probability, item.severity) for item in items)


def _parse(text: str, suffix: str) -> Any:
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ProviderUnavailable("install PyYAML to read YAML model cards, or use JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise ProviderUnavailable("the model card is not valid YAML") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ProviderUnavailable("the model card is not valid JSON") from None


def load_model_card(path: Path) -> ModelCard:
    """Read and validate a card; ``ProviderUnavailable`` names the first problem (not the path)."""
    try:
        if path.stat().st_size > _CARD_LIMIT:
            raise ProviderUnavailable("the model card is larger than 1 MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise ProviderUnavailable("the model card cannot be read") from None
    data = _parse(text, path.suffix.lower())
    if not isinstance(data, dict):
        raise ProviderUnavailable("the model card must be a mapping of fields")
    try:
        card = ModelCard.model_validate(data)
        card.input.spec()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error.get("loc", ())) or "card"
        raise ProviderUnavailable(f"model card field {where}: {error.get('msg', 'is invalid')}") from None
    except InvalidRequest as exc:
        raise ProviderUnavailable(f"model card input: {exc.detail}") from None
    return card


def card_dict(card: ModelCard) -> dict[str, Any]:
    """The card as plain JSON-ready data (what ``export_onnx`` writes)."""
    return card.model_dump(mode="json", exclude_none=True)
