"""Which provider analyses which image: ordered rules on modality and body part, then a default.

    router = Router.from_json('[{"modality": ["CR", "DX"], "body_part": "CHEST", '
                              '"provider": "torchxrayvision"}]', default="builtin")
    router.select("DX", "CHEST")   # "torchxrayvision"
    router.select("CT", "HEAD")    # "builtin"

The first rule whose every given condition matches wins; a rule without ``modality`` or
``body_part`` matches any value. Terms compare upper-case.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from irmsia.errors import ConfigError

PROVIDER_NAMES = frozenset({"mock", "builtin", "torchxrayvision", "onnx", "huggingface", "openai"})


@dataclass(frozen=True)
class RoutingRule:
    """Images whose modality is in ``modalities`` and body part in ``body_parts`` go to ``provider``.

    An empty set matches anything.
    """

    provider: str
    modalities: frozenset[str] = frozenset()
    body_parts: frozenset[str] = frozenset()

    def matches(self, modality: str, body_part: str) -> bool:
        if self.modalities and modality.upper() not in self.modalities:
            return False
        return not self.body_parts or body_part.upper() in self.body_parts


def _terms(value: Any, field: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
        raise ConfigError(f"AI_ROUTES: {field} must be a string or a list of strings")
    return frozenset(item.strip().upper() for item in items)


@dataclass(frozen=True)
class Router:
    """Ordered ``rules`` and the ``default`` provider name."""

    default: str
    rules: tuple[RoutingRule, ...] = ()

    def __post_init__(self) -> None:
        known = PROVIDER_NAMES
        for name in (self.default, *(rule.provider for rule in self.rules)):
            if name not in known:
                raise ConfigError(f"AI provider must be one of {', '.join(sorted(known))}; got {name!r}")

    def select(self, modality: str, body_part: str) -> str:
        """The provider name for an image of ``modality`` and ``body_part``."""
        for rule in self.rules:
            if rule.matches(modality, body_part):
                return rule.provider
        return self.default

    def providers(self) -> set[str]:
        """Every provider name the router can choose."""
        return {self.default, *(rule.provider for rule in self.rules)}

    @classmethod
    def from_rules(cls, rules: Iterable[dict[str, Any]], default: str) -> Router:
        """Build from dicts ``{"modality": [...], "body_part": [...], "provider": name}``.

        Raises ``ConfigError`` naming AI_ROUTES for anything malformed.
        """
        parsed: list[RoutingRule] = []
        for rule in rules:
            if not isinstance(rule, dict) or not isinstance(rule.get("provider"), str):
                raise ConfigError("AI_ROUTES: each rule needs a provider name")
            unknown = set(rule) - {"modality", "body_part", "provider"}
            if unknown:
                raise ConfigError(f"AI_ROUTES: unknown rule key {sorted(unknown)[0]!r}")
            parsed.append(
                RoutingRule(
                    provider=rule["provider"].strip().lower(),
                    modalities=_terms(rule.get("modality"), "modality"),
                    body_parts=_terms(rule.get("body_part"), "body_part"),
                )
            )
        return cls(default=default.strip().lower(), rules=tuple(parsed))

    @classmethod
    def from_json(cls, text: str, default: str) -> Router:
        """Build from the JSON list in AI_ROUTES ("" means no rules)."""
        if not text.strip():
            return cls(default=default.strip().lower())
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError("AI_ROUTES must be a JSON list of rules") from None
        if not isinstance(data, list):
            raise ConfigError("AI_ROUTES must be a JSON list of rules")
        return cls.from_rules(data, default)


def describe(rules: Sequence[RoutingRule]) -> list[str]:
    """One line per rule, for `irmsia config check` style output."""
    lines = []
    for rule in rules:
        modality = ",".join(sorted(rule.modalities)) or "*"
        body_part = ",".join(sorted(rule.body_parts)) or "*"
        lines.append(f"{modality} / {body_part} -> {rule.provider}")
    return lines
