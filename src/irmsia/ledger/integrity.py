"""What verification can find, and the pure scan that checks log rows against their hashes.

Each problem is reported as a ``Mismatch`` of one precise kind:

=========================  ===================================================================
``blob_modified``          a blob's SHA-256 differs from the digest its log entry recorded
``blob_missing``           the blob store holds nothing under the object's key
``db_hash_edited``         ``StoredObject.sha256`` no longer matches the object's log entry
``entry_altered``          an entry's bytes no longer hash to the leaf the log committed
``entry_deleted``          a leaf index (or a stored object) has no entry row any more
``entry_reordered``        an entry sits at another index than the one it was committed at
``checkpoint_forged``      a stored or anchored checkpoint's signature (or record) is not valid
``checkpoint_inconsistent`` the log does not reproduce a validly signed checkpoint's root, or
                           an anchored checkpoint is not a prefix of the latest one
=========================  ===================================================================

``LogScan`` is pure: the caller streams entry rows and the stored leaf hashes to it in index
order (from any source), with the validly signed checkpoints to check along the way; it keeps
O(log n) state plus the mismatching indexes. Details name indexes, sizes and opaque ids only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from irmsia.errors import InvalidRequest
from irmsia.ledger import entries
from irmsia.ledger.merkle import EMPTY_ROOT, leaf_hash, node_hash


class MismatchKind(StrEnum):
    BLOB_MODIFIED = "blob_modified"
    BLOB_MISSING = "blob_missing"
    DB_HASH_EDITED = "db_hash_edited"
    ENTRY_ALTERED = "entry_altered"
    ENTRY_DELETED = "entry_deleted"
    ENTRY_REORDERED = "entry_reordered"
    CHECKPOINT_FORGED = "checkpoint_forged"
    CHECKPOINT_INCONSISTENT = "checkpoint_inconsistent"


@dataclass(frozen=True)
class Mismatch:
    """One problem found: its kind, a PHI-free sentence, and where (index, object, checkpoint)."""

    kind: MismatchKind
    detail: str
    index: int | None = None
    object_id: str | None = None
    checkpoint_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        return out


@dataclass(frozen=True)
class EntryRow:
    """One ``ledger_entries`` row as read from the database."""

    index: int
    kind: str
    ref_id: str | None
    subject_id: str | None
    data: bytes


@dataclass(frozen=True)
class TrustedHead:
    """A checkpoint whose signature verified: the log must reproduce ``root`` at ``size``."""

    size: int
    root: bytes
    label: str  # "latest checkpoint", "anchored checkpoint (ipfs)", ...


class _Frontier:
    """The peaks of a growing RFC 9162 tree: O(log n) memory, root of the current size on demand."""

    def __init__(self) -> None:
        self._peaks: list[bytes] = []
        self.size = 0

    def add(self, leaf: bytes) -> None:
        index, digest = self.size, leaf
        while index & 1:
            digest = node_hash(self._peaks.pop(), digest)
            index >>= 1
        self._peaks.append(digest)
        self.size += 1

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        acc = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            acc = node_hash(peak, acc)
        return acc


class LogScan:
    """Check leaves ``0 .. size-1`` in order against their entries and the trusted heads.

    Feed every index exactly once, ascending, through :meth:`feed`; then call :meth:`finish`.
    ``max_tracked`` bounds the memory spent telling reordered entries from altered ones.
    """

    def __init__(self, size: int, heads: Iterable[TrustedHead], *, max_tracked: int = 100_000) -> None:
        self.size = size
        self._heads = sorted((h for h in heads if h.size <= size), key=lambda h: h.size)
        self._beyond = [h for h in heads if h.size > size]
        self._next_head = 0
        self._frontier = _Frontier()
        self._root_known = True
        self._next_index = 0
        self._max_tracked = max_tracked
        # index -> (hash of the entry as it is now, stored leaf hash): mismatches to classify.
        self._suspects: dict[int, tuple[bytes, bytes]] = {}
        self.mismatches: list[Mismatch] = []
        self.entries_checked = 0

    def feed(self, start: int, end: int, rows: Mapping[int, EntryRow], leaves: Mapping[int, bytes]) -> None:
        """Check indexes ``[start, end)``; ``rows`` and ``leaves`` hold what exists of them."""
        if start != self._next_index or end < start or end > self.size:
            raise InvalidRequest("log scan ranges must be contiguous and ascending")
        add_mismatch = self.mismatches.append
        due = self._due
        for index in range(start, end):
            row = rows.get(index)
            leaf = leaves.get(index)
            computed = None
            if row is None:
                add_mismatch(
                    Mismatch(MismatchKind.ENTRY_DELETED, "the entry at this index is missing", index)
                )
            else:
                self.entries_checked += 1
                computed = leaf_hash(row.data)
                if leaf is None:
                    add_mismatch(
                        Mismatch(
                            MismatchKind.CHECKPOINT_INCONSISTENT,
                            "the log's stored hash of this leaf is missing",
                            index,
                        )
                    )
                elif computed != leaf:
                    if len(self._suspects) < self._max_tracked:
                        self._suspects[index] = (computed, leaf)
                    else:
                        add_mismatch(Mismatch(MismatchKind.ENTRY_ALTERED, self._ALTERED, index))
                else:
                    # Only for intact bytes: a moved or edited entry is reported as that, once.
                    self._check_columns(row)
            committed = leaf if leaf is not None else computed
            if committed is None:
                self._root_known = False
            elif self._root_known:
                self._frontier.add(committed)
            self._next_index = index + 1
            if self._next_index >= due:
                self._check_heads()
                due = self._due
        if start == end:
            self._check_heads()

    _ALTERED = "the entry's bytes no longer hash to the leaf the log committed"

    def _check_columns(self, row: EntryRow) -> None:
        found = entries.index_of(row.data)
        if (found.kind, found.ref_id, found.subject_id) != (row.kind, row.ref_id, row.subject_id):
            self.mismatches.append(
                Mismatch(
                    MismatchKind.ENTRY_ALTERED,
                    "the entry's lookup columns disagree with its bytes",
                    row.index,
                    object_id=row.ref_id if row.kind == entries.OBJECT else None,
                )
            )

    @property
    def _due(self) -> int:
        """The size at which the next trusted head must be checked."""
        heads = self._heads
        return heads[self._next_head].size if self._next_head < len(heads) else self.size + 1

    def _check_heads(self) -> None:
        heads = self._heads
        while self._next_head < len(heads) and heads[self._next_head].size <= self._next_index:
            head = heads[self._next_head]
            self._next_head += 1
            if head.size == 0:
                ok = head.root == EMPTY_ROOT
            elif not self._root_known:
                self.mismatches.append(
                    Mismatch(
                        MismatchKind.CHECKPOINT_INCONSISTENT,
                        f"the log no longer holds every leaf of the {head.label}",
                        checkpoint_size=head.size,
                    )
                )
                continue
            else:
                ok = self._frontier.root() == head.root
            if not ok:
                self.mismatches.append(
                    Mismatch(
                        MismatchKind.CHECKPOINT_INCONSISTENT,
                        f"the log's root at this size differs from the {head.label}",
                        checkpoint_size=head.size,
                    )
                )

    def finish(self) -> list[Mismatch]:
        """Classify the suspects, report heads the log is too short for; returns all mismatches."""
        if self._next_index != self.size:
            raise InvalidRequest("the log scan did not cover every index")
        self._check_heads()
        by_leaf = {leaf: index for index, (_, leaf) in self._suspects.items()}
        for index, (computed, _) in sorted(self._suspects.items()):
            home = by_leaf.get(computed)
            if home is not None and home != index:
                self.mismatches.append(
                    Mismatch(
                        MismatchKind.ENTRY_REORDERED,
                        f"this index holds the entry the log committed at index {home}",
                        index,
                    )
                )
            else:
                self.mismatches.append(Mismatch(MismatchKind.ENTRY_ALTERED, self._ALTERED, index))
        for head in self._beyond:
            self.mismatches.append(
                Mismatch(
                    MismatchKind.CHECKPOINT_INCONSISTENT,
                    f"the log is shorter than the {head.label}",
                    checkpoint_size=head.size,
                )
            )
        self.mismatches.sort(key=_order)
        return self.mismatches

    @property
    def bad_indexes(self) -> set[int]:
        """Indexes whose entry cannot be trusted (altered, reordered, deleted)."""
        kinds = {MismatchKind.ENTRY_ALTERED, MismatchKind.ENTRY_REORDERED, MismatchKind.ENTRY_DELETED}
        return {m.index for m in self.mismatches if m.kind in kinds and m.index is not None} | set(
            self._suspects
        )


def _order(mismatch: Mismatch) -> tuple[int, int, str]:
    index = mismatch.index if mismatch.index is not None else -1
    return (index, list(MismatchKind).index(mismatch.kind), mismatch.object_id or "")


def summarise(mismatches: Sequence[Mismatch]) -> dict[str, int]:
    """Count of mismatches per kind (kinds with none omitted)."""
    counts: dict[str, int] = {}
    for mismatch in mismatches:
        counts[mismatch.kind.value] = counts.get(mismatch.kind.value, 0) + 1
    return counts
