"""Benchmark the ledger's Merkle tree: appends/s, proof time and size, against a naive baseline.

Run from the repository root::

    .venv/bin/python bench/ledger_merkle.py                # 10**6 entries, under ~2 minutes
    .venv/bin/python bench/ledger_merkle.py --entries 200000

Uses the in-memory NodeStore, so it measures hashing and bookkeeping, not a database. The
baseline, measured in the same run, is the textbook approach: recompute MTH / the audit path
recursively from all leaf hashes (RFC 9162 §2.1.1, §2.1.3.1) for every request.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence

from irmsia.ledger.merkle import EMPTY_ROOT, MerkleTree, leaf_hash, node_hash
from irmsia.ledger.nodestore import MemoryNodeStore
from irmsia.ledger.verifier import verify_consistency, verify_inclusion

ENTRY_SIZE = 200  # bytes: about one canonical JSON ledger entry
TARGET_APPENDS_PER_S = 20_000
TARGET_PROOF_MS = 1.0


def _entries(start: int, count: int) -> list[bytes]:
    pad = b"x" * ENTRY_SIZE
    return [(b"%d:" % i + pad)[:ENTRY_SIZE] for i in range(start, start + count)]


def _naive_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def _naive_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return [*_naive_path(index, leaves[:k]), _naive_root(leaves[k:])]
    return [*_naive_path(index - k, leaves[k:]), _naive_root(leaves[:k])]


def _per_call_us(func: Callable[[int], object], args: Sequence[int]) -> float:
    start = time.perf_counter()
    for arg in args:
        func(arg)
    return (time.perf_counter() - start) / len(args) * 1e6


def _bench_appends(entries: int, batch: int) -> tuple[MerkleTree, MemoryNodeStore, float, float]:
    single_count = min(entries, 100_000)
    single = MerkleTree(MemoryNodeStore())
    data = _entries(0, single_count)
    start = time.perf_counter()
    for entry in data:
        single.append(entry)
    single_rate = single_count / (time.perf_counter() - start)
    del single, data

    store = MemoryNodeStore()
    tree = MerkleTree(store)
    elapsed = 0.0
    for first in range(0, entries, batch):
        chunk = _entries(first, min(batch, entries - first))  # built outside the timed region
        start = time.perf_counter()
        tree.append_many(chunk)
        elapsed += time.perf_counter() - start
    return tree, store, single_rate, entries / elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="tree size (default 10**6)")
    parser.add_argument("--batch", type=int, default=1000, help="entries per append_many call")
    parser.add_argument("--samples", type=int, default=5000, help="proofs timed per kind")
    parser.add_argument("--baseline-size", type=int, default=1 << 15, help="leaves for the naive baseline")
    args = parser.parse_args(argv)
    rng = random.Random(20240601)
    n = args.entries
    began = time.perf_counter()

    tree, store, single_rate, batch_rate = _bench_appends(n, args.batch)
    print(f"entries: {n:,}  entry size: {ENTRY_SIZE} B  store: in-memory")
    print(f"appends/s single (1 store write each, {min(n, 100_000):,}): {single_rate:12,.0f}")
    print(f"appends/s batched ({args.batch} per write):          {batch_rate:12,.0f}")

    indices = [rng.randrange(n) for _ in range(args.samples)]
    sizes1 = [rng.randrange(1, n) if n > 1 else 1 for _ in range(args.samples)]
    incl_us = _per_call_us(tree.inclusion_proof, indices)
    cons_us = _per_call_us(tree.consistency_proof, sizes1)
    hist_root_us = _per_call_us(tree.root, sizes1)
    root, leaf0 = tree.root(), tree.leaf_hash_at(indices[0])
    proof = tree.inclusion_proof(indices[0])
    verify_us = _per_call_us(lambda _: verify_inclusion(leaf0, indices[0], n, proof, root), range(2000))
    cproof = tree.consistency_proof(sizes1[0])
    root1 = tree.root(sizes1[0])
    cverify_us = _per_call_us(lambda _: verify_consistency(sizes1[0], n, cproof, root1, root), range(2000))
    print(f"at size {n:,} (mean over {args.samples:,} random requests):")
    print(f"  inclusion proof generation   {incl_us:8.1f} us   verification {verify_us:8.1f} us")
    print(f"  consistency proof generation {cons_us:8.1f} us   verification {cverify_us:8.1f} us")
    print(f"  root at a historical size    {hist_root_us:8.1f} us")

    print("proof size (hashes; x32 bytes) by tree size, mean/max over 1,000 random requests:")
    size = 1000
    while size <= n:
        inc = [len(tree.inclusion_proof(rng.randrange(size), size)) for _ in range(1000)]
        con = [len(tree.consistency_proof(rng.randrange(1, size), size)) for _ in range(1000)]
        print(
            f"  n={size:>10,}  log2(n)={size.bit_length() - 1:>2}  inclusion {statistics.mean(inc):5.1f}/{max(inc):2}"
            f"  consistency {statistics.mean(con):5.1f}/{max(con):2}"
        )
        size *= 10

    base_n = min(args.baseline_size, n)
    leaves = store.get_nodes([(0, i) for i in range(base_n)])
    reps = 3
    start = time.perf_counter()
    for _ in range(reps):
        naive_root = _naive_root(leaves)
    naive_root_us = (time.perf_counter() - start) / reps * 1e6
    assert naive_root == tree.root(base_n)
    start = time.perf_counter()
    for _ in range(reps):
        naive_proof = _naive_path(base_n // 3, leaves)
    naive_path_us = (time.perf_counter() - start) / reps * 1e6
    assert naive_proof == tree.inclusion_proof(base_n // 3, base_n)
    ours_root_us = _per_call_us(tree.root, [base_n - 1] * 2000)
    ours_path_us = _per_call_us(lambda _: tree.inclusion_proof(base_n // 3, base_n), range(2000))
    print(f"naive baseline (recursive MTH over all leaf hashes) at {base_n:,} leaves:")
    print(
        f"  root:            naive {naive_root_us:10.0f} us  stored subtrees {ours_root_us:6.1f} us"
        f"  ratio {naive_root_us / ours_root_us:8.0f}x"
    )
    print(
        f"  inclusion proof: naive {naive_path_us:10.0f} us  stored subtrees {ours_path_us:6.1f} us"
        f"  ratio {naive_path_us / ours_path_us:8.0f}x"
    )

    ok_append = batch_rate >= TARGET_APPENDS_PER_S
    ok_proof = max(incl_us, cons_us) / 1000 <= TARGET_PROOF_MS
    print(f"targets: batched appends >= {TARGET_APPENDS_PER_S:,}/s {'PASS' if ok_append else 'FAIL'};")
    print(f"         proof generation <= {TARGET_PROOF_MS} ms {'PASS' if ok_proof else 'FAIL'}")
    assert leaf_hash(_entries(0, 1)[0]) == tree.leaf_hash_at(0)
    print(f"total wall time: {time.perf_counter() - began:.1f} s")
    return 0 if ok_append and ok_proof else 1


if __name__ == "__main__":
    raise SystemExit(main())
