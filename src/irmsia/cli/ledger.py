"""``irmsia verify`` and ``irmsia ledger …``: the same ledger use cases as the API.

``add_ledger_commands(sub, open_services, ctx)`` adds both commands to the ``irmsia`` parser's
subparsers; ``open_services(settings)`` is a context manager yielding the ``LedgerServices``
(``cli/main.py`` builds them from the container and closes it afterwards), ``ctx`` the
request context the CLI acts as. Handlers follow ``cli.main``'s ``(args, settings, out) -> int``.

``irmsia verify`` exits 0 when everything matches and 1 when a mismatch was found, printing
one line per mismatch: ``MISMATCH <kind> index=<i> object=<id> checkpoint=<size>: <detail>``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TextIO

from irmsia.config import Settings
from irmsia.ledger.checkpoint import NoteSigner
from irmsia.ledger.service import CheckpointRecord
from irmsia.usecases.context import RequestContext
from irmsia.usecases.ledger import LedgerServices, b64
from irmsia.usecases.verify import VerificationReport, VerifyScope

OpenServices = Callable[[Settings], AbstractContextManager[LedgerServices]]
Handler = Callable[[argparse.Namespace, Settings, TextIO], int]


def add_ledger_commands(sub: Any, open_services: OpenServices, ctx: RequestContext) -> None:
    """Add ``verify`` and ``ledger`` (with its subcommands) to ``sub``, an argparse subparsers object."""

    def bind(action: Callable[[argparse.Namespace, LedgerServices, TextIO], int]) -> Handler:
        def handler(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
            with open_services(settings) as services:
                return action(args, services, out)

        return handler

    verify = sub.add_parser("verify", help="re-hash stored blobs and check the ledger and its checkpoints")
    scope = verify.add_mutually_exclusive_group()
    scope.add_argument("--study", metavar="ID", help="only the objects of this study (opaque study id)")
    scope.add_argument("--sample", metavar="N", type=int, help="a random sample of N objects")
    scope.add_argument("--all", action="store_true", help="every stored object (the default)")
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.set_defaults(handler=bind(lambda args, services, out: _verify(args, services, out, ctx)))

    ledger = sub.add_parser("ledger", help="the tamper-evident ledger").add_subparsers(
        dest="ledger_command", required=True
    )
    checkpoint = ledger.add_parser("checkpoint", help="print the latest signed checkpoint")
    checkpoint.add_argument("--new", action="store_true", help="sign a checkpoint of the current log first")
    checkpoint.set_defaults(handler=bind(lambda args, services, out: _checkpoint(args, services, out, ctx)))

    listing = ledger.add_parser("checkpoints", help="list signed checkpoints, largest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=bind(lambda args, services, out: _checkpoints(args, services, out, ctx)))

    proof = ledger.add_parser("proof", help="inclusion and consistency proofs").add_subparsers(
        dest="proof_command", required=True
    )
    inclusion = proof.add_parser("inclusion", help="inclusion proof of one entry")
    inclusion.add_argument("index", type=int)
    inclusion.add_argument("--size", type=int, help="tree size (default: the latest checkpoint's)")
    inclusion.set_defaults(handler=bind(lambda args, services, out: _inclusion(args, services, out, ctx)))
    consistency = proof.add_parser("consistency", help="consistency proof between two tree sizes")
    consistency.add_argument("first", type=int)
    consistency.add_argument("second", type=int, nargs="?", help="default: the latest checkpoint's size")
    consistency.set_defaults(handler=bind(lambda args, services, out: _consistency(args, services, out, ctx)))

    receipt = ledger.add_parser("receipt", help="print a stored object's receipt (JSON)")
    receipt.add_argument("object_id")
    receipt.set_defaults(
        handler=bind(
            lambda args, services, out: _print(out, services.reads.receipt(ctx, args.object_id).json)
        )
    )

    anchors = ledger.add_parser("anchors", help="list checkpoint publications, newest first")
    anchors.add_argument("--limit", type=int, default=20)
    anchors.set_defaults(handler=bind(lambda args, services, out: _anchors(args, services, out, ctx)))
    anchor = ledger.add_parser("anchor", help="sign a checkpoint and publish it to every anchor now")
    anchor.set_defaults(handler=bind(lambda args, services, out: _anchor(services, out, ctx)))

    key = ledger.add_parser("public-key", help="print the log's verifier key (public)")
    key.set_defaults(handler=bind(lambda args, services, out: _print(out, services.reads.public_key())))

    keygen = ledger.add_parser("keygen", help="generate a checkpoint signing key for LEDGER_SIGNING_KEY")
    keygen.add_argument("--name", default="irmsia.local/ledger", help="key name: use the log's LEDGER_ORIGIN")
    keygen.set_defaults(handler=_keygen)


def _keygen(args: argparse.Namespace, _settings: Settings, out: TextIO) -> int:
    """Print a fresh signer key (secret) and its verifier key (public); opens no database."""
    signer = NoteSigner.generate(args.name)
    print("# LEDGER_SIGNING_KEY (secret: put it in your secret store, never in a log):", file=out)
    print(f"LEDGER_SIGNING_KEY={signer.to_string()}", file=out)
    print("# verifier key (public: give it to whoever checks receipts):", file=out)
    print(signer.verifier.to_string(), file=out)
    return 0


def _print(out: TextIO, text: str) -> int:
    print(text, file=out)
    return 0


def _verify(args: argparse.Namespace, services: LedgerServices, out: TextIO, ctx: RequestContext) -> int:
    scope = VerifyScope(study_id=args.study, sample=args.sample)
    report = services.verification.run(ctx, scope, trigger="cli")
    if args.json:
        print(json.dumps(_report_json(report), indent=2, sort_keys=True, default=str), file=out)
    else:
        _print_report(report, out)
    return 0 if report.ok else 1


def _print_report(report: VerificationReport, out: TextIO) -> None:
    anchored = (
        f"{report.anchored_size} ({report.anchored_kind})" if report.anchored_size is not None else "none"
    )
    print(
        f"log size {report.log_size}; latest checkpoint {report.checkpoint_size}; anchored {anchored}",
        file=out,
    )
    print(
        f"checked {report.entries_checked} entries, {report.checkpoints_checked} checkpoints, "
        f"{report.objects_checked} objects ({report.bytes_hashed} bytes re-hashed; scope {report.scope})",
        file=out,
    )
    for warning in report.warnings:
        print(f"warning: {warning}", file=out)
    for m in report.mismatches:
        where = " ".join(
            f"{name}={value}"
            for name, value in (
                ("index", m.index),
                ("object", m.object_id),
                ("checkpoint", m.checkpoint_size),
            )
            if value is not None
        )
        print(f"MISMATCH {m.kind.value} {where}: {m.detail}", file=out)
    if report.mismatch_count > len(report.mismatches):
        print(f"... and {report.mismatch_count - len(report.mismatches)} more", file=out)
    verdict = "OK" if report.ok else f"FAILED: {report.mismatch_count} mismatches {report.summary}"
    print(f"verification {report.id}: {verdict}", file=out)


def _report_json(report: VerificationReport) -> dict[str, Any]:
    body = {key: value for key, value in report.__dict__.items() if key != "mismatches"}
    body["mismatches"] = [m.as_dict() for m in report.mismatches]
    return body


def _show_checkpoint(record: CheckpointRecord, out: TextIO) -> None:
    print(f"# size {record.size}, signed {record.created_at.isoformat()}", file=out)
    print(record.note, end="", file=out)


def _checkpoint(args: argparse.Namespace, services: LedgerServices, out: TextIO, ctx: RequestContext) -> int:
    if args.new:
        services.anchoring.sign_checkpoint()
    _show_checkpoint(services.reads.latest_checkpoint(ctx), out)
    return 0


def _checkpoints(args: argparse.Namespace, services: LedgerServices, out: TextIO, ctx: RequestContext) -> int:
    page = services.reads.checkpoints(ctx, limit=max(1, args.limit))
    print(f"{'SIZE':>12}  {'SIGNED':<32} ROOT", file=out)
    for item in page.items:
        print(f"{item.size:>12}  {item.created_at.isoformat():<32} {b64(item.root_hash)}", file=out)
    print(f"{page.total} checkpoints", file=out)
    return 0


def _inclusion(args: argparse.Namespace, services: LedgerServices, out: TextIO, ctx: RequestContext) -> int:
    proof = services.reads.inclusion_proof(ctx, args.index, args.size)
    body = {
        "index": proof.index,
        "size": proof.size,
        "entry": b64(proof.entry),
        "leaf_hash": b64(proof.leaf_hash),
        "proof": [b64(item) for item in proof.proof],
        "root_hash": b64(proof.root),
        "checkpoint": proof.checkpoint,
    }
    print(json.dumps(body, indent=2), file=out)
    return 0


def _consistency(args: argparse.Namespace, services: LedgerServices, out: TextIO, ctx: RequestContext) -> int:
    proof = services.reads.consistency_proof(ctx, args.first, args.second)
    body = {
        "first": proof.first,
        "second": proof.second,
        "proof": [b64(item) for item in proof.proof],
        "first_root": b64(proof.first_root),
        "second_root": b64(proof.second_root),
    }
    print(json.dumps(body, indent=2), file=out)
    return 0


def _anchors(args: argparse.Namespace, services: LedgerServices, out: TextIO, ctx: RequestContext) -> int:
    page = services.reads.anchors(ctx, limit=max(1, args.limit))
    print(f"{'KIND':<8} {'SIZE':>10} {'STATUS':<9} {'WHEN':<32} REFERENCE / ERROR", file=out)
    for item in page.items:
        print(
            f"{item.kind:<8} {item.checkpoint_size:>10} {item.status:<9} {item.created_at.isoformat():<32} "
            f"{item.reference or item.error or ''}",
            file=out,
        )
    return 0


def _anchor(services: LedgerServices, out: TextIO, ctx: RequestContext) -> int:
    records = services.anchoring.publish(ctx)
    for item in records:
        print(
            f"{item.kind}: {item.status} size {item.checkpoint_size} {item.reference or item.error or ''}",
            file=out,
        )
    if not records:
        print("no anchors are configured (BLOCKCHAIN_TYPE)", file=out)
    return 0 if all(item.status == "anchored" for item in records) else 1
