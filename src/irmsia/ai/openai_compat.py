"""The ``openai`` provider: any OpenAI-compatible chat-completions server with image input.

Works with OpenAI and with self-hosted servers that speak the same protocol (vLLM, Ollama,
llama.cpp's server): ``base_url`` points at the ``/v1`` root. The image goes as a base64 PNG data
URL (downscaled so its longest side is at most ``max_image_side``), with only the modality, body
part and the requester's context as text; the answer is constrained with ``response_format``
``json_schema`` and validated before use.

Failures map to IRMSIA errors: a timeout → ``ServiceTimeout``; unreachable, HTTP 429 (with its
Retry-After, in seconds, as ``retry_after`` on the error) and 5xx → ``ExternalServiceError``,
which the runner retries; rejected credentials → ``ProviderUnavailable``; a refusal, a truncated
or invalid answer, an answer that does not match the schema → ``AIError``. Messages never quote
the server's reply. The API key is held as a ``SecretStr``: it is sent only in the Authorization
header and appears in no log, error or repr.

``OpenAIReportWriter`` uses the same protocol to write ``report_text`` from another provider's
findings (the "vision + LLM" chain).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, ClassVar, Literal

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from irmsia.ai.base import ImageMeta, InputSpec, ModelInfo, PreparedImage, Provider, ProviderOutput
from irmsia.ai.schema import AnalysisResult, Finding, Severity
from irmsia.domain.png import encode_png
from irmsia.domain.render import thumbnail
from irmsia.errors import AIError, ExternalServiceError, ProviderUnavailable, ServiceTimeout

log = logging.getLogger(__name__)

ANALYSIS_PROMPT = (
    "You assist with research analysis of one de-identified medical image. Describe only what is "
    "visible in the image. Report image quality problems as findings too. Give each finding a "
    "severity (normal, low, moderate, high, critical) and a confidence between 0 and 1, and a risk "
    "score between 0 and 100. If the image cannot be interpreted, say so instead of guessing. "
    "Your output is a draft for a qualified reader and is not for clinical use."
)
REPORT_PROMPT = (
    "You write the narrative section of a draft imaging report from findings produced by an "
    "automated system. Describe the given findings in plain clinical prose, in order of severity. "
    "Add no finding, measurement or diagnosis that is not in the list; if the system made no "
    "diagnostic assessment, say so. The draft is not for clinical use."
)

_SEVERITIES = [severity.value for severity in Severity]
ANALYSIS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "findings",
        "suggested_diagnosis",
        "confidence",
        "risk_score",
        "recommendations",
        "report_text",
    ],
    "properties": {
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["description", "location", "confidence", "severity"],
                "properties": {
                    "description": {"type": "string"},
                    "location": {"type": ["string", "null"]},
                    "confidence": {"type": "number"},
                    "severity": {"type": "string", "enum": _SEVERITIES},
                },
            },
        },
        "suggested_diagnosis": {"type": "string"},
        "confidence": {"type": "number"},
        "risk_score": {"type": "number"},
        "recommendations": {"type": "array", "items": {"type": "string"}},
        "report_text": {"type": "string"},
    },
}
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["report_text"],
    "properties": {"report_text": {"type": "string"}},
}


class _AnswerFinding(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    description: str = Field(min_length=1, max_length=500)
    location: str | None = Field(None, max_length=200)
    confidence: float = Field(ge=0.0, le=1.0)
    severity: Severity


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    findings: list[_AnswerFinding]
    suggested_diagnosis: str = Field(max_length=500)
    confidence: float = Field(ge=0.0, le=1.0)
    risk_score: float = Field(ge=0.0, le=100.0)
    recommendations: list[str]
    report_text: str = Field(max_length=20_000)


class _ReportAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    report_text: str = Field(min_length=1, max_length=20_000)


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the delta-seconds form; an HTTP date is ignored)."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def image_data_url(display: np.ndarray, max_side: int = 1024) -> str:
    """A ``data:image/png;base64,...`` URL of a uint8 display image, longest side ≤ ``max_side``."""
    small = thumbnail(display, max_side)
    return "data:image/png;base64," + base64.b64encode(encode_png(small)).decode("ascii")


def _describe(meta: ImageMeta) -> str:
    text = f"Modality: {meta.modality or 'unknown'}. Body part: {meta.body_part or 'unknown'}."
    if meta.additional_context:
        text += f" Context from the requester: {meta.additional_context}"
    return text


class ChatClient:
    """POSTs chat completions with a JSON-schema response format and returns the parsed JSON.

    ``http`` is injected (its own timeouts apply; ``timeout`` bounds each request here). Raises
    the errors listed in the module docstring.
    """

    def __init__(
        self, base_url: str, model: str, api_key: str | SecretStr | None, http: httpx.Client, timeout: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._key = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        self._http = http
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r})"

    def complete(
        self, messages: list[dict[str, Any]], schema_name: str, schema: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        """(the answer's JSON object, the model name the server reports)."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "strict": True, "schema": schema},
            },
        }
        headers = {"Content-Type": "application/json"}
        if self._key is not None and self._key.get_secret_value():
            headers["Authorization"] = f"Bearer {self._key.get_secret_value()}"
        try:
            response = self._http.post(
                f"{self.base_url}/chat/completions", json=body, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException:
            raise ServiceTimeout("the AI service did not answer in time") from None
        except httpx.TransportError:
            raise ExternalServiceError("the AI service cannot be reached") from None
        self._check_status(response)
        return self._parse(response)

    @staticmethod
    def _check_status(response: httpx.Response) -> None:
        status = response.status_code
        if status == 429:
            error = ExternalServiceError("the AI service is rate limiting requests (HTTP 429)")
            # The runner reads this to wait as long as the server asks (see runner.RetryPolicy).
            error.retry_after = _retry_after(response)  # type: ignore[attr-defined]
            raise error
        if status >= 500:
            raise ExternalServiceError(f"the AI service failed (HTTP {status})")
        if status in (401, 403):
            raise ProviderUnavailable(f"the AI service rejected the credentials (HTTP {status})")
        if status >= 400:
            raise AIError(f"the AI service rejected the request (HTTP {status})")

    def _parse(self, response: httpx.Response) -> tuple[dict[str, Any], str]:
        try:
            payload = response.json()
            choice = payload["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise AIError("the AI service returned a malformed response") from None
        if message.get("refusal"):
            raise AIError("the model refused to analyse the image")
        if choice.get("finish_reason") == "length":
            raise AIError("the model's answer was cut off")
        content = message.get("content")
        if not isinstance(content, str):
            raise AIError("the AI service returned no answer")
        try:
            answer = json.loads(content)
        except json.JSONDecodeError:
            raise AIError("the model's answer is not valid JSON") from None
        if not isinstance(answer, dict):
            raise AIError("the model's answer does not match the result schema")
        model = payload.get("model") if isinstance(payload.get("model"), str) else self.model
        return answer, model or self.model


class OpenAICompatibleProvider(Provider):
    """Vision analysis by a multimodal LLM behind an OpenAI-compatible API."""

    name: ClassVar[str] = "openai"
    remote: ClassVar[bool] = True
    input_spec = InputSpec(representation="display", channels=None, dtype="uint8")

    def __init__(
        self,
        *,
        http: httpx.Client,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | SecretStr | None = None,
        timeout: float = 60.0,
        max_image_side: int = 1024,
        detail: Literal["low", "high", "auto"] = "high",
    ) -> None:
        self._client = ChatClient(base_url, model, api_key, http, timeout)
        self._max_side = max_image_side
        self._detail = detail
        self.model_info = ModelInfo(model=model, version="api")

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider({self._client!r})"

    def predict(self, image: PreparedImage) -> ProviderOutput:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": ANALYSIS_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": _describe(image.meta)},
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": image_data_url(image.tensor, self._max_side),
                            "detail": self._detail,
                        },
                    },
                ],
            },
        ]
        raw, model = self._client.complete(messages, "irmsia_analysis", ANALYSIS_SCHEMA)
        try:
            answer = _Answer.model_validate(raw)
        except ValidationError:
            raise AIError("the model's answer does not match the result schema") from None
        return ProviderOutput(
            findings=[
                Finding(
                    description=f.description,
                    location=f.location,
                    confidence=f.confidence,
                    severity=f.severity,
                )
                for f in answer.findings
            ],
            risk_score=answer.risk_score,
            suggested_diagnosis=answer.suggested_diagnosis,
            confidence=answer.confidence,
            recommendations=answer.recommendations,
            report_text=answer.report_text or None,
            model=model,
        )


class OpenAIReportWriter:
    """Writes ``report_text`` from a vision result with an OpenAI-compatible LLM (remote)."""

    name = "openai"
    remote = True

    def __init__(
        self,
        *,
        http: httpx.Client,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | SecretStr | None = None,
        timeout: float = 60.0,
        include_image: bool = True,
        max_image_side: int = 1024,
    ) -> None:
        self._client = ChatClient(base_url, model, api_key, http, timeout)
        self._include_image = include_image
        self._max_side = max_image_side
        self.model_info = ModelInfo(model=model, version="api")

    def __repr__(self) -> str:
        return f"OpenAIReportWriter({self._client!r})"

    def write_report(self, result: AnalysisResult, meta: ImageMeta, display: np.ndarray | None) -> str:
        summary = {
            "findings": [
                {
                    "description": f.description,
                    "location": f.location,
                    "severity": f.severity.value,
                    "confidence": f.confidence,
                    **({"value": f.value, "unit": f.unit} if f.value is not None else {}),
                }
                for f in result.findings
            ],
            "suggested_diagnosis": result.suggested_diagnosis,
            "system": result.provenance.model,
            "simulated": result.simulated,
        }
        content: list[dict[str, Any]] = [
            {
                "type": "text",
                "text": _describe(meta) + "\nFindings (JSON):\n" + json.dumps(summary, sort_keys=True),
            }
        ]
        if self._include_image and display is not None:
            content.append(
                {"type": "image_url", "image_url": {"url": image_data_url(display, self._max_side)}}
            )
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": REPORT_PROMPT},
            {"role": "user", "content": content},
        ]
        raw, _ = self._client.complete(messages, "irmsia_report", REPORT_SCHEMA)
        try:
            return _ReportAnswer.model_validate(raw).report_text.strip()
        except ValidationError:
            raise AIError("the model's report does not match the schema") from None
