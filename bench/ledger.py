"""Benchmark the embedded ledger on SQLite: appends/s, proofs at 10**6 entries, verification MB/s.

Run from the repository root::

    .venv/bin/python bench/ledger.py                  # 10**6 entries, a few minutes
    .venv/bin/python bench/ledger.py --quick          # 10**5 entries, well under a minute
    .venv/bin/python bench/ledger.py --entries 100000

Everything runs in a temporary directory (a SQLite file, a filesystem blob store) that is
removed at the end. Each figure has a baseline measured in the same run:

* appends: plain inserts of the same entry rows into a table without any Merkle bookkeeping
  (what a log that proves nothing would cost), one per transaction and in batches, into a
  second SQLite file with the same settings (so the ledger file's size stays its own);
* proofs: the same tree in memory (``MemoryNodeStore``), i.e. the floor without a database;
* verification: reading and hashing the same blob files directly (``Path.read_bytes`` +
  SHA-256), and reading and hashing the entry rows with one plain ``SELECT`` for the log scan.

Proof size must grow as O(log n): inclusion and consistency proofs are measured (size and
time) at tree sizes 10**3, 10**4, ... up to the log size, printed beside log2 n, and checked
against the RFC 9162 bound of ceil(log2 n) + 1 hashes (inclusion proofs need at most
ceil(log2 n), consistency proofs one more).

Targets: >= 20,000 batched appends/s, <= 1 ms per proof at 10**6 entries, and every measured
proof within the size bound. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from irmsia.db import migrate
from irmsia.db.engine import make_engine, make_session_factory, transaction
from irmsia.db.imaging import Instance, Patient, Series, StoredObject, Study
from irmsia.db.ledger import LedgerEntry
from irmsia.ledger.checkpoint import NoteSigner
from irmsia.ledger.merkle import MerkleTree
from irmsia.ledger.nodestore import MemoryNodeStore
from irmsia.ledger.service import Ledger
from irmsia.ledger.verifier import verify_consistency, verify_inclusion
from irmsia.security.policy import SYSTEM
from irmsia.storage import BlobStore, create_blob_store
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.context import RequestContext
from irmsia.usecases.verify import Verification, VerifyScope

TARGET_APPENDS_PER_S = 20_000
TARGET_PROOF_MS = 1.0
ORIGIN = "bench.irmsia/ledger"
CTX = RequestContext(principal=SYSTEM)
_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _clock() -> datetime:
    return _T0


def _entries(start: int, count: int) -> list[bytes]:
    """Realistic object-registration entries (canonical JSON, ~260 bytes)."""
    out = []
    for i in range(start, start + count):
        body = {
            "type": "object",
            "object_id": f"{i:032x}",
            "instance_id": f"{i // 3:032x}",
            "kind": "dicom",
            "frame": 0,
            "sha256": hashlib.sha256(b"%d" % i).hexdigest(),
            "size": 524288 + i % 1000,
            "key_id": "kek-2026-01",
            "time": "2026-01-01T00:00:00Z",
        }
        out.append(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return out


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _per_call_us(func: Callable[[int], object], args: Sequence[int]) -> float:
    start = time.perf_counter()
    for arg in args:
        func(arg)
    return (time.perf_counter() - start) / len(args) * 1e6


def bench_appends(
    sessions: sessionmaker[Session], baseline: Engine, ledger: Ledger, n: int, batch: int, singles: int
) -> dict[str, float]:
    """Ledger appends vs plain inserts into ``baseline``, a second SQLite file with the same settings."""
    plain = Table(
        "bench_plain", MetaData(), Column("idx", Integer, primary_key=True), Column("data", LargeBinary)
    )
    plain.create(baseline)
    plain_sessions = make_session_factory(baseline)
    data = _entries(0, singles)
    start = time.perf_counter()
    for entry in data:
        with transaction(sessions) as session:
            ledger.append(session, entry)
    single = _rate(singles, time.perf_counter() - start)
    start = time.perf_counter()
    for i, entry in enumerate(data):
        with transaction(plain_sessions) as session:
            session.execute(insert(plain), [{"idx": i, "data": entry}])
    single_base = _rate(singles, time.perf_counter() - start)

    elapsed = base_elapsed = 0.0
    appended = 0
    for first in range(singles, n, batch):
        chunk = _entries(first, min(batch, n - first))  # built outside the timed region
        start = time.perf_counter()
        with transaction(sessions) as session:
            ledger.append_many(session, chunk)
        elapsed += time.perf_counter() - start
        start = time.perf_counter()
        with transaction(plain_sessions) as session:
            session.execute(insert(plain), [{"idx": first + i, "data": e} for i, e in enumerate(chunk)])
        base_elapsed += time.perf_counter() - start
        appended += len(chunk)
    return {
        "single": single,
        "single_base": single_base,
        "batched": _rate(appended, elapsed),
        "batched_base": _rate(appended, base_elapsed),
    }


def bench_proofs(
    sessions: sessionmaker[Session], ledger: Ledger, n: int, samples: int, rng: random.Random
) -> dict[str, float]:
    memory = MerkleTree(MemoryNodeStore())
    for first in range(0, n, 100_000):
        memory.append_many(_entries(first, min(100_000, n - first)))
    indices = [rng.randrange(n) for _ in range(samples)]
    firsts = [rng.randrange(1, n) for _ in range(samples)]
    with sessions() as session:
        incl_us = _per_call_us(lambda i: ledger.inclusion_proof(session, i, n), indices)
        cons_us = _per_call_us(lambda m: ledger.consistency_proof(session, m, n), firsts)
        tree = ledger.tree(session)
        root = tree.root()
        assert root == memory.root(), "the SQL store and the memory store disagree"
        proof = ledger.inclusion_proof(session, indices[0], n)
        verify_inclusion(tree.leaf_hash_at(indices[0]), indices[0], n, proof, root)
        cproof = ledger.consistency_proof(session, firsts[0], n)
        verify_consistency(firsts[0], n, cproof, tree.root(firsts[0]), root)
        incl_len = [len(ledger.inclusion_proof(session, i, n)) for i in indices[:1000]]
        cons_len = [len(ledger.consistency_proof(session, m, n)) for m in firsts[:1000]]
    return {
        "incl_us": incl_us,
        "cons_us": cons_us,
        "incl_mem_us": _per_call_us(lambda i: memory.inclusion_proof(i, n), indices),
        "cons_mem_us": _per_call_us(lambda m: memory.consistency_proof(m, n), firsts),
        "incl_len_mean": statistics.mean(incl_len),
        "incl_len_max": max(incl_len),
        "cons_len_mean": statistics.mean(cons_len),
        "cons_len_max": max(cons_len),
    }


def proof_size_bound(size: int) -> int:
    """The most hashes an RFC 9162 proof for a tree of ``size`` leaves holds: ceil(log2 size) + 1."""
    return (size - 1).bit_length() + 1  # (size - 1).bit_length() == ceil(log2 size) for size >= 1


def scaling_sizes(n: int) -> list[int]:
    """The tree sizes the proof-scaling check measures: 10**3, 10**4, ... below ``n``, then ``n``."""
    sizes = [10**k for k in range(3, 13) if 10**k < n]
    return [*sizes, n]


def bench_proof_scaling(
    sessions: sessionmaker[Session], ledger: Ledger, n: int, samples: int, rng: random.Random
) -> list[dict[str, float]]:
    """Proof size and time at each of ``scaling_sizes(n)``, on the SQL log of ``n`` entries.

    A proof for a smaller tree size comes from the same stored tree (RFC 9162 proofs may be
    asked for any size up to the current one). Besides ``samples`` random requests per size, the
    first and last entries and the sizes next to the largest power of two are always asked
    for, as they give the longest proofs; one proof of each kind is verified against the root.
    """
    rows = []
    with sessions() as session:
        tree = ledger.tree(session)
        for size in scaling_sizes(n):
            split = 1 << ((size - 1).bit_length() - 1) if size > 1 else 1
            indices = [0, size - 1, size // 2, *(rng.randrange(size) for _ in range(samples))]
            firsts = sorted(
                {
                    1,
                    max(size - 1, 1),
                    split,
                    min(split + 1, size),
                    *(rng.randrange(1, size) for _ in range(samples)),
                }
            )
            incl_us = _per_call_us(lambda i, size=size: ledger.inclusion_proof(session, i, size), indices)
            cons_us = _per_call_us(lambda m, size=size: ledger.consistency_proof(session, m, size), firsts)
            incl_len = [len(ledger.inclusion_proof(session, i, size)) for i in indices]
            cons_len = [len(ledger.consistency_proof(session, m, size)) for m in firsts]
            root = tree.root(size)
            index = indices[-1]
            verify_inclusion(
                tree.leaf_hash_at(index), index, size, ledger.inclusion_proof(session, index, size), root
            )
            first = firsts[len(firsts) // 2]
            verify_consistency(
                first, size, ledger.consistency_proof(session, first, size), tree.root(first), root
            )
            rows.append(
                {
                    "size": size,
                    "log2": math.log2(size),
                    "bound": proof_size_bound(size),
                    "incl_us": incl_us,
                    "incl_mean": statistics.mean(incl_len),
                    "incl_max": max(incl_len),
                    "cons_us": cons_us,
                    "cons_mean": statistics.mean(cons_len),
                    "cons_max": max(cons_len),
                    "requests": len(indices) + len(firsts),
                }
            )
    return rows


def bench_log_scan(
    sessions: sessionmaker[Session], ledger: Ledger, blobs: BlobStore, n: int
) -> dict[str, float]:
    audit = AuditLog(sessions=sessions, clock=_clock, log=ledger)
    verification = Verification(sessions=sessions, ledger=ledger, blobs=blobs, audit=audit, clock=_clock)
    with transaction(sessions) as session:
        ledger.sign_checkpoint(session)
    start = time.perf_counter()
    report = verification.run(CTX, VerifyScope(), trigger="scheduled")
    elapsed = time.perf_counter() - start
    assert report.ok and report.entries_checked >= n, report.summary
    start = time.perf_counter()
    with sessions() as session:
        for (data,) in session.execute(select(LedgerEntry.data).execution_options(yield_per=10_000)):
            hashlib.sha256(b"\x00" + data).digest()
    base = time.perf_counter() - start
    return {
        "entries_per_s": _rate(report.entries_checked, elapsed),
        "base_per_s": _rate(report.entries_checked, base),
    }


def bench_blobs(work: Path, objects: int, size_mib: int) -> dict[str, float]:
    """Verification of ``objects`` blobs of ``size_mib`` MiB each, in a database of their own."""
    engine = make_engine(f"sqlite:///{work / 'blobs.db'}")
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    blobs = create_blob_store("filesystem", root=work / "blobs")
    ledger = Ledger(NoteSigner.generate(ORIGIN), origin=ORIGIN, clock=_clock)
    now = _clock()
    with transaction(sessions) as session:
        patient = Patient(pseudonym="BENCH", created_at=now)
        study = Study(patient=patient, study_uid="2.25.1", created_at=now, updated_at=now)
        series = Series(study=study, series_uid="2.25.2", modality="CT", created_at=now)
        session.add_all([patient, study, series])
        for i in range(objects):
            instance = Instance(
                series=series,
                sop_instance_uid=f"2.25.3.{i}",
                sop_class_uid="1.2",
                transfer_syntax="1.2",
                created_at=now,
            )
            session.add(instance)
            session.flush()
            blob = secrets.token_bytes(size_mib << 20)
            key = f"objects/{i:04d}.bin"
            blobs.put(key, blob)
            obj = StoredObject(
                instance_id=instance.id,
                kind="dicom",
                storage_key=key,
                sha256=hashlib.sha256(blob).hexdigest(),
                size=len(blob),
                plaintext_size=len(blob),
                media_type="application/dicom",
                key_id="kek",
                wrapped_key=b"w",
                created_at=now,
            )
            session.add(obj)
            session.flush()
            ledger.register_object(session, obj)
        ledger.sign_checkpoint(session)
    verification = Verification(
        sessions=sessions,
        ledger=ledger,
        blobs=blobs,
        audit=AuditLog(sessions=sessions, clock=_clock, log=ledger),
        clock=_clock,
    )
    verification.run(CTX, VerifyScope(), trigger="scheduled")  # warm the page cache for both sides
    start = time.perf_counter()
    report = verification.run(CTX, VerifyScope(), trigger="scheduled")
    elapsed = time.perf_counter() - start
    assert report.ok, report.summary
    start = time.perf_counter()
    for path in sorted((work / "blobs" / "objects").iterdir()):
        hashlib.sha256(path.read_bytes()).hexdigest()
    base = time.perf_counter() - start
    engine.dispose()
    mb = report.bytes_hashed / 1e6
    return {"mb": mb, "mb_per_s": mb / elapsed, "base_mb_per_s": mb / base}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="log size (default 10**6)")
    parser.add_argument("--batch", type=int, default=1000, help="entries per transaction when batching")
    parser.add_argument("--singles", type=int, default=2000, help="appends timed one transaction each")
    parser.add_argument("--samples", type=int, default=2000, help="proofs timed per kind")
    parser.add_argument("--blobs", type=int, default=64, help="blobs re-hashed by the verification bench")
    parser.add_argument("--blob-mib", type=int, default=1, help="size of each blob in MiB")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smaller run: 10**5 entries, 1,000 single appends, 500 proofs per kind, 16 blobs",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.entries, args.singles, args.samples, args.blobs = 100_000, 1000, 500, 16
    n = max(args.entries, args.singles + 2)
    rng = random.Random(20260301)
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="irmsia-bench-ledger-"))
    try:
        engine = make_engine(f"sqlite:///{work / 'ledger.db'}")
        migrate.upgrade(engine)
        sessions = make_session_factory(engine)
        ledger = Ledger(NoteSigner.generate(ORIGIN), origin=ORIGIN, clock=_clock)

        baseline = make_engine(f"sqlite:///{work / 'baseline.db'}")
        appends = bench_appends(sessions, baseline, ledger, n, args.batch, args.singles)
        baseline.dispose()
        (work / "baseline.db").unlink()
        print(f"SQLite (WAL, synchronous=NORMAL), {n:,} entries of ~{len(_entries(0, 1)[0])} B")
        print("appends/s                         ledger     plain insert (baseline)   ratio")
        print(
            f"  single (1 txn each, {args.singles:,}) {appends['single']:10,.0f}  {appends['single_base']:14,.0f}"
            f"            {appends['single'] / appends['single_base']:5.2f}"
        )
        print(
            f"  batched ({args.batch} per txn)      {appends['batched']:10,.0f}  {appends['batched_base']:14,.0f}"
            f"            {appends['batched'] / appends['batched_base']:5.2f}"
        )
        proofs = bench_proofs(sessions, ledger, n, args.samples, rng)
        print(
            f"proofs at size {n:,} (mean of {args.samples:,} random requests; SQL store vs in-memory baseline)"
        )
        print(
            f"  inclusion   {proofs['incl_us'] / 1000:7.3f} ms  memory {proofs['incl_mem_us'] / 1000:7.3f} ms"
            f"  ratio {proofs['incl_us'] / proofs['incl_mem_us']:6.1f}x  size {proofs['incl_len_mean']:.1f}"
            f" hashes (max {proofs['incl_len_max']}, {proofs['incl_len_max'] * 32} B; log2 n = {n.bit_length() - 1})"
        )
        print(
            f"  consistency {proofs['cons_us'] / 1000:7.3f} ms  memory {proofs['cons_mem_us'] / 1000:7.3f} ms"
            f"  ratio {proofs['cons_us'] / proofs['cons_mem_us']:6.1f}x  size {proofs['cons_len_mean']:.1f}"
            f" hashes (max {proofs['cons_len_max']}, {proofs['cons_len_max'] * 32} B)"
        )
        scaling = bench_proof_scaling(sessions, ledger, n, min(args.samples, 1000), rng)
        print("proof size vs tree size (SQL store; random requests plus the longest cases per size)")
        print(
            "         n  log2 n   inclusion ms  hashes mean/max   consistency ms  hashes mean/max"
            "   bound  max/log2 n"
        )
        ok_size = True
        for row in scaling:
            fits = max(row["incl_max"], row["cons_max"]) <= row["bound"]
            ok_size = ok_size and fits
            print(
                f"  {row['size']:>9,} {row['log2']:6.2f}   {row['incl_us'] / 1000:10.3f}  "
                f"{row['incl_mean']:7.1f} / {row['incl_max']:<3}   {row['cons_us'] / 1000:12.3f}  "
                f"{row['cons_mean']:7.1f} / {row['cons_max']:<3}   {row['bound']:5}"
                f"  {max(row['incl_max'], row['cons_max']) / row['log2']:6.2f}  {'PASS' if fits else 'FAIL'}"
            )
        scan = bench_log_scan(sessions, ledger, create_blob_store("memory"), n)
        print(
            f"log verification (entries vs leaves vs signed root): {scan['entries_per_s']:10,.0f} entries/s;"
            f" plain SELECT+hash baseline {scan['base_per_s']:10,.0f}/s; ratio {scan['entries_per_s'] / scan['base_per_s']:.2f}"
        )
        size_mb = (work / "ledger.db").stat().st_size / 1e6
        print(
            f"ledger database file: {size_mb:,.0f} MB ({size_mb * 1e6 / n:,.0f} B per entry, indexes included)"
        )
        engine.dispose()
        blobs = bench_blobs(work, args.blobs, args.blob_mib)
        print(
            f"blob re-hash (filesystem, {blobs['mb']:.0f} MB): {blobs['mb_per_s']:8,.0f} MB/s;"
            f" direct read+SHA-256 baseline {blobs['base_mb_per_s']:8,.0f} MB/s;"
            f" ratio {blobs['mb_per_s'] / blobs['base_mb_per_s']:.2f}"
        )
        ok_append = appends["batched"] >= TARGET_APPENDS_PER_S
        ok_proof = max(proofs["incl_us"], proofs["cons_us"]) / 1000 <= TARGET_PROOF_MS
        print(f"targets: batched appends >= {TARGET_APPENDS_PER_S:,}/s {'PASS' if ok_append else 'FAIL'};")
        print(f"         proof generation <= {TARGET_PROOF_MS} ms at {n:,} {'PASS' if ok_proof else 'FAIL'}")
        print(f"         proof size <= ceil(log2 n) + 1 hashes at every size {'PASS' if ok_size else 'FAIL'}")
        print(f"total wall time: {time.perf_counter() - began:.1f} s")
        return 0 if ok_append and ok_proof and ok_size else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
