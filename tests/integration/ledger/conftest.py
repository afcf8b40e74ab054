"""Fixtures for the ledger tests: the ledger wired onto the shared ``container``, an app with the
ledger routers, and synthetic images (rows inserted directly plus blobs in the container's store)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from irmsia.api.app import create_app
from irmsia.bootstrap import Container
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Patient, Series, StoredObject, Study
from irmsia.ledger.anchors.mock import MockAnchor
from irmsia.ledger.checkpoint import NoteSigner
from irmsia.ledger.service import Ledger
from irmsia.usecases.ledger import LedgerServices
from tests.conftest import LEDGER_TEST_KEY

ORIGIN = "irmsia.test/ledger"


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.from_string(LEDGER_TEST_KEY)


@pytest.fixture
def services(container: Container) -> LedgerServices:
    """The container's own ledger services (BLOCKCHAIN_TYPE=mock in tests)."""
    return container.ledger


@pytest.fixture
def ledger(services: LedgerServices) -> Ledger:
    return services.ledger


@pytest.fixture
def mock_anchor(services: LedgerServices) -> MockAnchor:
    (anchor,) = services.anchors
    assert isinstance(anchor, MockAnchor)
    return anchor


@pytest.fixture
def app(container: Container) -> FastAPI:
    """The app exactly as production builds it: the ledger routers are part of it."""
    return create_app(container=container)


@dataclass
class StoredStudy:
    study_id: str
    instance_ids: list[str]
    object_ids: list[str]


@dataclass
class Images:
    """Insert de-identified image rows and encrypted-looking blobs, logging each object."""

    container: Container
    ledger: Ledger
    counter: list[int] = field(default_factory=lambda: [0])

    def _n(self) -> int:
        self.counter[0] += 1
        return self.counter[0]

    def add_study(self, instances: int = 2, blob_size: int = 2048) -> StoredStudy:
        now = self.container.clock()
        n = self._n()
        object_ids: list[str] = []
        instance_ids: list[str] = []
        with transaction(self.container.sessions) as session:
            patient = Patient(pseudonym=f"PSEUDO-{n}-{secrets.token_hex(4)}", created_at=now)
            study = Study(
                patient=patient, study_uid=f"2.25.{n}{secrets.randbits(40)}", created_at=now, updated_at=now
            )
            series = Series(
                study=study, series_uid=f"2.25.{n}{secrets.randbits(40)}1", modality="CT", created_at=now
            )
            session.add_all([patient, study, series])
            for i in range(instances):
                instance = Instance(
                    series=series,
                    sop_instance_uid=f"2.25.{n}{secrets.randbits(40)}{i}2",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    transfer_syntax="1.2.840.10008.1.2.1",
                    created_at=now,
                )
                session.add(instance)
                session.flush()
                blob = secrets.token_bytes(blob_size)  # stands in for ciphertext
                key = f"objects/{secrets.token_hex(1)}/{secrets.token_hex(16)}.bin"
                self.container.blobs.put(key, blob)
                obj = StoredObject(
                    instance_id=instance.id,
                    kind="dicom",
                    frame=0,
                    storage_key=key,
                    sha256=hashlib.sha256(blob).hexdigest(),
                    size=len(blob),
                    plaintext_size=len(blob) - 28,
                    media_type="application/dicom",
                    key_id="kek-1",
                    wrapped_key=b"wrapped",
                    created_at=now,
                )
                session.add(obj)
                session.flush()
                self.ledger.register_object(session, obj)
                instance_ids.append(instance.id)
                object_ids.append(obj.id)
            study_id = study.id
        return StoredStudy(study_id, instance_ids, object_ids)

    def storage_key(self, object_id: str) -> str:
        with self.container.sessions() as session:
            obj = session.get(StoredObject, object_id)
            assert obj is not None
            return obj.storage_key

    def blob_path(self, object_id: str) -> Path:
        return self.container.settings.storage_path / self.storage_key(object_id)

    def sql(self, statement: str, **params: object) -> None:
        """Tamper with the database directly, as an attacker with SQL access would."""
        with self.container.engine.begin() as connection:
            connection.execute(text(statement), params)


@pytest.fixture
def images(container: Container, services: LedgerServices, ledger: Ledger) -> Images:
    return Images(container, ledger)
