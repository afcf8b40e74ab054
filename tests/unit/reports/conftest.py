"""Report builders for the report tests: de-identified CT slices turned into AI results.

The UIDs, pseudonyms and shifted dates come from running IRMSIA's own de-identifier over
``tests.factories.make_ct`` slices, which carry the PHI canaries; so a canary found in a
builder's output means a builder leaked something the model never held, or the model was
fed identifying data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from irmsia.domain.deid import Deidentifier, DeidOptions
from irmsia.domain.png import encode_png
from irmsia.reports.model import (
    Finding,
    ImageResult,
    Provenance,
    Report,
    ReportStatus,
    Severity,
    SignOff,
    SignOffAction,
    Study,
)
from tests.factories import make_ct

KEY = b"test-key-0123456789abcdef-irmsia"
CREATED = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
SIGNED = datetime(2026, 3, 2, 14, 30, 0, tzinfo=UTC)
WEIGHTS = "ab" * 32
LEDGER_HASH = "c0ffee" + "0" * 58

NARRATIVE = "Opacité focale du lobe inférieur droit; Ελληνικά και Кириллица render too."
EDITED = "Clinician's reading: small right lower lobe opacity, likely atelectasis."


def thumbnail(seed: int, *, rows: int = 96, columns: int = 128) -> bytes:
    """A small 8-bit grayscale PNG: a gradient with a bright blob, different per seed."""
    y, x = np.mgrid[0:rows, 0:columns]
    cy, cx = rows * (0.3 + 0.05 * (seed % 5)), columns * (0.6 - 0.05 * (seed % 4))
    blob = 200 * np.exp(-(((y - cy) ** 2) + ((x - cx) ** 2)) / 120.0)
    array = np.clip(x * 0.6 + blob, 0, 255).astype(np.uint8)
    return encode_png(array)


def deidentified_slices(count: int) -> list[Dataset]:
    """``count`` de-identified CT slices of one patient and one study."""
    study_uid, series_uid = generate_uid(), generate_uid()
    deidentifier = Deidentifier(DeidOptions(retain_long_modified_dates=True), KEY)
    return [
        deidentifier.deidentify(make_ct(study_uid=study_uid, series_uid=series_uid, seed=i)).dataset
        for i in range(count)
    ]


def image_result(
    ds: Dataset, index: int, *, with_thumbnail: bool = True, simulated: bool = False
) -> ImageResult:
    return ImageResult(
        image_id=f"img-{index:04d}",
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        series_instance_uid=ds.SeriesInstanceUID,
        thumbnail_png=thumbnail(index) if with_thumbnail else None,
        findings=(
            Finding(
                description="Focal opacity",
                location="right lower lobe",
                confidence=0.87,
                severity=Severity.MODERATE,
            ),
            Finding(description="Pleural effusion", location=None, confidence=0.12, severity=Severity.LOW),
        ),
        risk_score=62.5,
        suggested_diagnosis="Community-acquired pneumonia",
        recommendations=("Clinical correlation", "Follow-up CT in 6 weeks"),
        probabilities={"pneumonia": 0.81, "atelectasis": 0.34, "normal": 0.05},
        narrative=NARRATIVE,
        provenance=Provenance(provider="onnx", model="chest-ct-net", version="1.4.2", weights_sha256=WEIGHTS),
        simulated=simulated,
    )


def sign_off(action: SignOffAction) -> SignOff:
    return SignOff(
        user_id="u-42",
        username="dr.house",
        signed_at=SIGNED,
        action=action,
        edited_narrative=EDITED if action is SignOffAction.EDITED else None,
        comment="Checked against prior imaging." if action is not SignOffAction.CONFIRMED else None,
    )


_STATUS = {
    None: ReportStatus.PRELIMINARY,
    SignOffAction.CONFIRMED: ReportStatus.FINAL,
    SignOffAction.EDITED: ReportStatus.FINAL,
    SignOffAction.REJECTED: ReportStatus.REJECTED,
}


def build_report(
    images: int = 2,
    *,
    action: SignOffAction | None = None,
    registered: bool = False,
    with_thumbnails: bool = True,
    simulated: bool = False,
    **overrides: Any,
) -> Report:
    """A report over ``images`` de-identified slices, preliminary unless ``action`` is given."""
    slices = deidentified_slices(max(images, 1))
    first = slices[0]
    study = Study(
        study_id="st-0001",
        study_instance_uid=first.StudyInstanceUID,
        study_date=date(int(first.StudyDate[:4]), int(first.StudyDate[4:6]), int(first.StudyDate[6:])),
        modalities=("CT",),
        accession_pseudonym=first.AccessionNumber,
    )
    fields: dict[str, Any] = {
        "report_id": "rep-0001",
        "study": study,
        "patient_pseudonym": first.PatientID,
        "images": tuple(
            image_result(ds, i, with_thumbnail=with_thumbnails, simulated=simulated)
            for i, ds in enumerate(slices[:images])
        ),
        "status": _STATUS[action],
        "sign_off": sign_off(action) if action else None,
        "ledger_hash": LEDGER_HASH if registered else None,
        "ledger_index": 17 if registered else None,
        "created_at": CREATED,
    }
    fields.update(overrides)
    return Report(**fields)


@pytest.fixture(scope="session")
def make_report() -> Callable[..., Report]:
    """The ``build_report`` function, for tests that need variants."""
    return build_report


@pytest.fixture(scope="session")
def preliminary() -> Report:
    return build_report()


@pytest.fixture(scope="session")
def final() -> Report:
    return build_report(action=SignOffAction.CONFIRMED, registered=True)


@pytest.fixture(scope="session")
def edited() -> Report:
    return build_report(action=SignOffAction.EDITED, registered=True)


@pytest.fixture(scope="session")
def rejected() -> Report:
    return build_report(action=SignOffAction.REJECTED)
