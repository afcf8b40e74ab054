"""Fixtures for the ledger tests: the published reference vectors under tests/data/merkle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

MERKLE_DATA = Path(__file__).resolve().parents[2] / "data" / "merkle"


@pytest.fixture(scope="session")
def tree8() -> dict[str, Any]:
    """The 8-leaf reference tree, the 130-leaf rolling constants and the signed-note vector."""
    data: dict[str, Any] = json.loads((MERKLE_DATA / "tree8.json").read_text())
    return data
