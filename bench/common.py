"""What the benchmarks share: the settings of a throwaway IRMSIA on a temporary SQLite database.

Benchmarks run as scripts from the repository root (``.venv/bin/python bench/NAME.py``), so this
module is imported as ``common`` from the folder it lives in.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from irmsia.ledger.checkpoint import NoteSigner


def bench_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """Test-mode settings with fresh secrets and cheap password hashing, plus ``overrides``."""
    return {
        "IRMSIA_ENV": "test",
        "IRMSIA_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{(data_dir / 'irmsia.db').as_posix()}",
        "SECRET_KEY": secrets.token_hex(32),
        "ENCRYPTION_KEY": secrets.token_hex(32),
        "PSEUDONYM_KEY": secrets.token_hex(32),
        "LEDGER_SIGNING_KEY": NoteSigner.generate("irmsia.local/ledger").to_string(),
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "256",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }
