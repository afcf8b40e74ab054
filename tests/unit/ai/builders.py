"""Tiny models and a loopback chat-completions server, built by the tests themselves.

Nothing here downloads anything: the ONNX model is a few hundred bytes made with onnx.helper,
the Hugging Face models are randomly initialised from small configs, and the DenseNet weights
are torchxrayvision's architecture with random initial weights.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

LABELS = ("Alpha", "Beta", "Gamma")


# --- ONNX --------------------------------------------------------------------------------------


def tiny_onnx_classifier(
    path: Path,
    *,
    labels: Sequence[str] = LABELS,
    size: int = 32,
    channels: int = 1,
    metadata_labels: bool = False,
    seed: int = 0,
) -> Path:
    """An ONNX classifier: global average pool → linear layer → logits (N, len(labels))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 2.0, (channels, len(labels))).astype(np.float32)
    bias = rng.normal(0.0, 0.5, (len(labels),)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(labels)])],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata_labels:
        helper.set_model_props(model, {"labels": json.dumps(list(labels))})
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def onnx_card(
    directory: Path,
    *,
    labels: Sequence[str] | None = LABELS,
    activation: str = "sigmoid",
    metadata_labels: bool = False,
    extra: dict[str, Any] | None = None,
    **model_args: Any,
) -> Path:
    """A tiny ONNX model and its JSON model card in ``directory``; returns the card's path."""
    tiny_onnx_classifier(
        directory / "tiny.onnx", labels=labels or LABELS, metadata_labels=metadata_labels, **model_args
    )
    card: dict[str, Any] = {
        "name": "tiny-classifier",
        "version": "0.1",
        "model": "tiny.onnx",
        "intended_use": "tests only",
        "input": {"size": [32, 32], "resize": "stretch", "channels": 1, "value_range": [-1.0, 1.0]},
        "output": {"activation": activation},
    }
    if labels is not None:
        card["output"]["labels"] = list(labels)
    card.update(extra or {})
    path = directory / "card.json"
    path.write_text(json.dumps(card), encoding="utf-8")
    return path


# --- Hugging Face -------------------------------------------------------------------------------


def tiny_hf_classifier(directory: Path, labels: Sequence[str] = ("normal", "abnormal")) -> Path:
    """A randomly initialised ViT image classifier (a few KB) saved with its image processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


CAPTION_WORDS = ("the", "image", "shows", "a", "chest", "radiograph")


def tiny_hf_captioner(directory: Path, word: str = "radiograph") -> Path:
    """A tiny ViT + GPT-2 vision encoder-decoder whose decoder always emits ``word``.

    The decoder's token embeddings are one-hot and its final layer norm outputs a constant that
    points at ``word``, so greedy generation is deterministic whatever the image.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        PreTrainedTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3}
    vocab.update({w: i + 4 for i, w in enumerate(CAPTION_WORDS)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]"
    )
    encoder = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    decoder = GPT2Config(
        vocab_size=len(vocab),
        n_positions=32,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        add_cross_attention=True,
        is_decoder=True,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config)
    with torch.no_grad():
        embeddings = model.decoder.transformer.wte.weight
        embeddings.zero_()
        embeddings[torch.arange(len(vocab)), torch.arange(len(vocab))] = 1.0
        model.decoder.transformer.ln_f.weight.zero_()
        model.decoder.transformer.ln_f.bias.zero_()
        model.decoder.transformer.ln_f.bias[vocab[word]] = 10.0
    generation = model.generation_config
    generation.decoder_start_token_id, generation.pad_token_id, generation.eos_token_id = 1, 0, 2
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def tiny_hf_git(directory: Path, word: str = "chest") -> Path:
    """A tiny GIT (``GitForCausalLM``) with its ``GitProcessor``, whose output layer always picks ``word``.

    The language-model head's weights are zero and its bias points at ``word``, so greedy
    generation emits ``word`` at every step whatever the image. Saved the way a GIT checkpoint
    is: model, ``processor_config.json`` (CLIP image processor) and tokenizer in one directory.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessorPil,
        GitConfig,
        GitForCausalLM,
        GitProcessor,
        PreTrainedTokenizerFast,
    )

    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3}
    vocab.update({w: i + 4 for i, w in enumerate(CAPTION_WORDS)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="[CLS]",
        cls_token="[CLS]",
        eos_token="[SEP]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
    )
    config = GitConfig(
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
        },
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = GitForCausalLM(config)
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
        model.output.bias[vocab[word]] = 10.0
    generation = model.generation_config
    generation.bos_token_id, generation.eos_token_id, generation.pad_token_id = 1, 2, 0
    model.save_pretrained(directory)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    GitProcessor(image_processor=image_processor, tokenizer=fast).save_pretrained(directory)
    return directory


# --- torchxrayvision ----------------------------------------------------------------------------


def random_xrv_weights(path: Path, *, wrapped: bool = False, labels: Sequence[str] | None = None) -> Path:
    """torchxrayvision's DenseNet-121 with its random initial weights, saved as a state dict."""
    import torch

    from irmsia.ai.xrv import load_xrv_models

    torch.manual_seed(0)
    model = load_xrv_models().DenseNet(weights=None)
    state = model.state_dict()
    if wrapped:
        payload: dict[str, Any] = {"state_dict": state}
        if labels is not None:
            payload["labels"] = list(labels)
        torch.save(payload, path)
    else:
        torch.save(state, path)
    return path


# --- a loopback chat-completions server ---------------------------------------------------------


VALID_ANSWER = {
    "findings": [
        {
            "description": "Image appears technically adequate",
            "location": None,
            "confidence": 0.8,
            "severity": "normal",
        }
    ],
    "suggested_diagnosis": "No acute abnormality described",
    "confidence": 0.7,
    "risk_score": 12,
    "recommendations": ["Review by a qualified reader"],
    "report_text": "The image is technically adequate.",
}


@dataclass
class ChatServer:
    """A chat-completions server on 127.0.0.1 that the test steers through ``mode``.

    Modes: "ok", "report" (answers for the report writer), "429" (with Retry-After), "500",
    "garbage" (not JSON), "bad_json" (content is not JSON), "schema" (JSON of the wrong shape),
    "refusal", "slow" (waits until ``release`` is set), "401". ``modes`` queues one mode per
    request before falling back to ``mode``. ``requests`` records each parsed body and headers.
    """

    url: str = ""
    mode: str = "ok"
    modes: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] = field(default_factory=lambda: dict(VALID_ANSWER))

    def next_mode(self) -> str:
        return self.modes.pop(0) if self.modes else self.mode


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
            return

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            server.requests.append(body)
            server.headers.append({k.lower(): v for k, v in self.headers.items()})
            mode = server.next_mode()
            if self.path != "/v1/chat/completions":
                self._send(404, b'{"error": "not found"}')
                return
            if mode == "slow":
                server.release.wait(10)
            if mode == "429":
                self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "7"})
                return
            if mode == "500":
                self._send(500, b'{"error": {"message": "boom"}}')
                return
            if mode == "401":
                self._send(401, b'{"error": {"message": "bad key"}}')
                return
            if mode == "garbage":
                self._send(200, b"<html>not json</html>")
                return
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
            if mode == "refusal":
                message["refusal"] = "I cannot help with that."
            elif mode == "bad_json":
                message["content"] = "certainly! here is {not json"
            elif mode == "schema":
                message["content"] = json.dumps({"findings": "none", "risk": "high"})
            elif mode == "report":
                message["content"] = json.dumps({"report_text": "Narrative: the findings are described."})
            else:
                message["content"] = json.dumps(server.answer)
            payload = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": f"{body.get('model', 'unknown')}-served",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
            self._send(200, json.dumps(payload).encode())

    return Handler


@contextmanager
def chat_server() -> Iterator[ChatServer]:
    """Run a ChatServer on a free loopback port for the duration of the block."""
    state = ChatServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
