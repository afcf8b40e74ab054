"""The OpenAI-compatible provider against a loopback chat-completions server the test runs."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from irmsia.ai.base import ImageInput, ImageMeta
from irmsia.ai.mock import MockProvider
from irmsia.ai.openai_compat import OpenAICompatibleProvider, OpenAIReportWriter
from irmsia.ai.routing import Router
from irmsia.ai.runner import AnalysisRunner, ProviderPool, RetryPolicy
from irmsia.ai.schema import AnalysisResult
from irmsia.domain.png import decode_png
from tests.unit.ai.builders import VALID_ANSWER, ChatServer, chat_server
from tests.unit.ai.conftest import FIXED_NOW

API_KEY = "sk-test-SECRETKEY-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with chat_server() as running:
        yield running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def _image() -> ImageInput:
    display = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    return ImageInput(
        display=display, meta=ImageMeta(modality="CR", body_part="CHEST", additional_context="cough")
    )


def _provider(server: ChatServer, http: httpx.Client, *, timeout: float = 10.0) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        http=http, model="vision-test", base_url=server.url, api_key=API_KEY, timeout=timeout
    )


def _analyze(
    provider: OpenAICompatibleProvider, sleeps: list[float] | None = None, **kwargs: object
) -> AnalysisResult:
    runner = AnalysisRunner(
        ProviderPool({"openai": lambda: provider}),
        Router("openai"),
        clock=lambda: FIXED_NOW,
        sleep=(sleeps if sleeps is not None else []).append,
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        return runner.analyze_image(_image())
    finally:
        runner.close()


def test_a_valid_answer_becomes_a_result_and_the_request_has_the_protocols_shape(
    server: ChatServer, http: httpx.Client
) -> None:
    result = _analyze(_provider(server, http))

    assert result.status == "ok"
    assert result.findings[0].description == VALID_ANSWER["findings"][0]["description"]
    assert result.risk_score == 12 and result.confidence == pytest.approx(0.7)
    assert result.report_text == "The image is technically adequate."
    assert result.model_used == "vision-test-served"
    assert result.provenance.provider == "openai"
    [body] = server.requests
    assert body["model"] == "vision-test"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["messages"][0]["role"] == "system"
    user = body["messages"][1]
    text = next(part for part in user["content"] if part["type"] == "text")["text"]
    assert "Modality: CR" in text and "cough" in text
    url = next(part for part in user["content"] if part["type"] == "image_url")["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert decode_png(base64.b64decode(url.split(",", 1)[1])).shape == (48, 64)
    assert server.headers[0]["authorization"] == f"Bearer {API_KEY}"


def test_large_images_are_downscaled_before_sending(server: ChatServer, http: httpx.Client) -> None:
    provider = OpenAICompatibleProvider(http=http, model="m", base_url=server.url, max_image_side=16)

    _analyze(provider)

    url = server.requests[0]["messages"][1]["content"][1]["image_url"]["url"]
    assert max(decode_png(base64.b64decode(url.split(",", 1)[1])).shape) == 16
    assert "authorization" not in server.headers[0]


def test_rate_limits_are_retried_after_the_servers_delay(server: ChatServer, http: httpx.Client) -> None:
    server.modes = ["429", "429"]
    sleeps: list[float] = []

    result = _analyze(_provider(server, http), sleeps, retry=RetryPolicy(attempts=3))

    assert result.status == "ok"
    assert len(server.requests) == 3
    assert sleeps == [7.0, 7.0]


def test_server_errors_are_retried_then_reported(server: ChatServer, http: httpx.Client) -> None:
    server.mode = "500"
    sleeps: list[float] = []

    result = _analyze(_provider(server, http), sleeps, retry=RetryPolicy(attempts=3, initial_delay=0.25))

    assert len(server.requests) == 3 and sleeps == [0.25, 0.5]
    assert result.error is not None
    assert result.error.code == "external_service_error" and "HTTP 500" in result.error.message


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("garbage", "malformed response"),
        ("bad_json", "not valid JSON"),
        ("schema", "does not match the result schema"),
        ("refusal", "refused"),
    ],
)
def test_unusable_answers_are_error_results_without_retry(
    server: ChatServer, http: httpx.Client, mode: str, message: str
) -> None:
    server.mode = mode

    result = _analyze(_provider(server, http))

    assert result.status == "error" and result.findings == []
    assert result.error is not None and result.error.code == "ai_error"
    assert message in result.error.message
    assert len(server.requests) == 1


def test_a_slow_server_times_out_into_an_error_result(server: ChatServer, http: httpx.Client) -> None:
    server.mode = "slow"

    result = _analyze(_provider(server, http, timeout=0.2), retry=RetryPolicy(attempts=2, initial_delay=0.0))

    assert result.error is not None and result.error.code == "service_timeout"
    assert len(server.requests) == 2


def test_rejected_credentials_are_unavailable_and_not_retried(server: ChatServer, http: httpx.Client) -> None:
    server.mode = "401"

    result = _analyze(_provider(server, http))

    assert result.error is not None and result.error.code == "provider_unavailable"
    assert len(server.requests) == 1


def test_an_unreachable_server_is_an_external_service_error(http: httpx.Client) -> None:
    provider = OpenAICompatibleProvider(http=http, model="m", base_url="http://127.0.0.1:9/v1", timeout=2.0)

    result = _analyze(provider, retry=RetryPolicy(attempts=1))

    assert result.error is not None and result.error.code == "external_service_error"


def test_the_api_key_appears_in_no_log_error_or_repr(
    server: ChatServer, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = _provider(server, http)
    outcomes = []
    for mode in ("ok", "429", "500", "garbage", "401"):
        server.mode = mode
        outcomes.append(_analyze(provider, retry=RetryPolicy(attempts=1)))

    texts = [repr(provider), str(vars(provider)), caplog.text, *(r.model_dump_json() for r in outcomes)]
    assert all(API_KEY not in text and "SECRETKEY" not in text for text in texts)


def test_the_report_writer_chains_after_a_vision_provider(server: ChatServer, http: httpx.Client) -> None:
    server.mode = "report"
    writer = OpenAIReportWriter(http=http, model="writer-test", base_url=server.url, api_key=API_KEY)
    runner = AnalysisRunner(
        ProviderPool({"mock": MockProvider}), Router("mock"), clock=lambda: FIXED_NOW, report_writer=writer
    )
    try:
        result = runner.analyze_image(_image())
    finally:
        runner.close()

    assert result.report_text == "Narrative: the findings are described."
    assert result.report_provenance is not None and result.report_provenance.model == "writer-test"
    [body] = server.requests
    assert body["response_format"]["json_schema"]["name"] == "irmsia_report"
    text = body["messages"][1]["content"][0]["text"]
    assert "Findings (JSON)" in text and '"simulated": true' in text
    assert body["messages"][1]["content"][1]["type"] == "image_url"
