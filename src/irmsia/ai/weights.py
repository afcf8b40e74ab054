"""Model files: existence checks and SHA-256 digests for provenance.

The digest goes into every result's provenance, so a result can be traced to the exact weights
that produced it. Files are read in chunks; nothing is downloaded, ever.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from irmsia.errors import ProviderUnavailable

_CHUNK = 1 << 20


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a readable file; else ``ProviderUnavailable`` naming ``what`` (not the path)."""
    if not path.is_file():
        raise ProviderUnavailable(f"{what} not found; put it in place locally (nothing is downloaded)")
    return path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes; ``ProviderUnavailable`` if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise ProviderUnavailable("a model file cannot be read") from exc
    return digest.hexdigest()


def files_sha256(paths: Iterable[Path]) -> str:
    """One digest for several weight files (shards): SHA-256 over sorted ``name:sha256`` lines.

    A single file gets its own plain digest, so it matches ``sha256sum`` of that file.
    """
    ordered = sorted(paths, key=lambda p: p.name)
    if len(ordered) == 1:
        return file_sha256(ordered[0])
    manifest = "".join(f"{path.name}:{file_sha256(path)}\n" for path in ordered)
    return hashlib.sha256(manifest.encode()).hexdigest()
