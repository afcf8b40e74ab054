"""``irmsia verify`` and ``irmsia ledger …`` run in-process, exactly as cli/main.py will wire them."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from irmsia.bootstrap import Container
from irmsia.cli.ledger import add_ledger_commands
from irmsia.config import Settings
from irmsia.ledger.verifier import verify_receipt
from irmsia.usecases.ledger import LedgerServices
from tests.integration.ledger.conftest import ORIGIN, Images
from tests.support import CLI_CTX

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(container: Container, services: LedgerServices) -> Run:
    opened: list[Settings] = []

    @contextmanager
    def open_services(settings: Settings) -> Iterator[LedgerServices]:
        opened.append(settings)
        yield services

    parser = argparse.ArgumentParser(prog="irmsia")
    add_ledger_commands(parser.add_subparsers(dest="command", required=True), open_services, CLI_CTX)

    def run(*argv: str) -> tuple[int, str]:
        args = parser.parse_args(argv)
        out = io.StringIO()
        code = args.handler(args, container.settings, out)
        assert all(settings is container.settings for settings in opened)
        return code, out.getvalue()

    return run


def test_verify_exits_zero_when_clean_and_one_with_a_line_per_mismatch(cli: Run, images: Images) -> None:
    stored = images.add_study(instances=2)
    code, out = cli("verify")
    assert code == 0 and "OK" in out and "2 objects" in out
    images.blob_path(stored.object_ids[1]).write_bytes(b"changed")
    code, out = cli("verify", "--study", stored.study_id)
    assert code == 1
    lines = [line for line in out.splitlines() if line.startswith("MISMATCH")]
    assert lines == [
        f"MISMATCH blob_modified index={lines[0].split('index=')[1].split()[0]} object={stored.object_ids[1]}: "
        "the blob's SHA-256 differs from the digest the log recorded"
    ]
    code, out = cli("verify", "--sample", "1", "--json")
    report = json.loads(out)
    assert report["objects_checked"] == 1 and report["scope"] == "sample:1"


def test_verify_scope_options_are_exclusive(cli: Run) -> None:
    with pytest.raises(SystemExit):
        cli("verify", "--all", "--sample", "3")


def test_receipt_and_public_key_commands_give_an_offline_checkable_receipt(cli: Run, images: Images) -> None:
    stored = images.add_study(instances=1)
    code, key = cli("ledger", "public-key")
    assert code == 0 and key.startswith(ORIGIN + "+")
    code, receipt = cli("ledger", "receipt", stored.object_ids[0])
    assert code == 0
    assert verify_receipt(receipt.strip(), key.strip(), origin=ORIGIN).leaf_index == 0


def test_checkpoint_proof_and_anchor_commands(cli: Run, images: Images) -> None:
    images.add_study(instances=3)
    code, out = cli("ledger", "checkpoint", "--new")
    assert code == 0 and out.splitlines()[1] == ORIGIN
    size = int(out.splitlines()[2])
    code, out = cli("ledger", "proof", "inclusion", "1", "--size", str(size))
    assert code == 0 and json.loads(out)["size"] == size
    code, out = cli("ledger", "proof", "consistency", "1", str(size))
    assert code == 0 and json.loads(out)["second"] == size
    code, out = cli("ledger", "anchor")
    assert code == 0 and out.startswith("mock: anchored")
    code, out = cli("ledger", "anchors")
    assert code == 0 and "mock:0" in out
    code, out = cli("ledger", "checkpoints")
    assert code == 0 and out.strip().endswith("checkpoints")


def test_keygen_prints_a_signer_key_that_bootstrap_can_load(cli: Run) -> None:
    from irmsia.ledger.checkpoint import NoteSigner

    code, out = cli("ledger", "keygen", "--name", ORIGIN)
    assert code == 0
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    secret = lines[0].removeprefix("LEDGER_SIGNING_KEY=")
    signer = NoteSigner.from_string(secret)
    assert signer.name == ORIGIN and signer.verifier.to_string() == lines[1]
