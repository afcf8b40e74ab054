"""Burned-in annotation risk, the policy decision and masking of pixel regions."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from irmsia.domain.deid import (
    BurnedInDecision,
    BurnedInPolicy,
    Region,
    burned_in_risk,
    decide_burned_in,
    mask_regions,
)
from irmsia.errors import InvalidRequest
from tests.factories import make_cr, make_ct, make_multiframe_us, make_secondary_capture


def test_explicit_yes_is_a_risk_whatever_the_modality() -> None:
    ds = make_ct()
    ds.BurnedInAnnotation = "YES"
    assert burned_in_risk(ds)


def test_explicit_no_is_trusted_even_for_suspect_modalities() -> None:
    ds = make_multiframe_us()
    ds.BurnedInAnnotation = "NO"
    assert not burned_in_risk(ds)


@pytest.mark.parametrize("build", [make_multiframe_us, make_secondary_capture])
def test_suspect_objects_without_the_flag_are_a_risk(build: object) -> None:
    ds = build()  # type: ignore[operator]
    assert "BurnedInAnnotation" not in ds
    assert burned_in_risk(ds)


@pytest.mark.parametrize("modality", ["XA", "RF", "ES", "XC", "OT"])
def test_suspect_modalities_without_the_flag_are_a_risk(modality: str) -> None:
    ds = Dataset()
    ds.Modality = modality
    assert burned_in_risk(ds)


def test_encapsulated_pdf_without_the_flag_is_a_risk() -> None:
    ds = Dataset()
    ds.Modality = "DOC"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    assert burned_in_risk(ds)


def test_ct_and_cr_without_the_flag_are_not_a_risk() -> None:
    for ds in (make_ct(), make_cr()):
        del ds.BurnedInAnnotation
        assert not burned_in_risk(ds)


@pytest.mark.parametrize(
    ("policy", "regions", "expected"),
    [
        (BurnedInPolicy.REJECT, (), BurnedInDecision.REJECT),
        (BurnedInPolicy.QUARANTINE, (), BurnedInDecision.QUARANTINE),
        (BurnedInPolicy.MASK, (Region(0, 0, 10, 4),), BurnedInDecision.MASK),
        (BurnedInPolicy.MASK, (), BurnedInDecision.QUARANTINE),  # nothing to mask with
    ],
)
def test_policy_decides_what_happens_to_a_risky_object(
    policy: BurnedInPolicy, regions: tuple[Region, ...], expected: BurnedInDecision
) -> None:
    assert decide_burned_in(make_multiframe_us(), policy, regions=regions) is expected


def test_objects_without_risk_are_accepted_under_every_policy() -> None:
    for policy in BurnedInPolicy:
        assert decide_burned_in(make_ct(), policy, regions=[Region(0, 0, 1, 1)]) is BurnedInDecision.ACCEPT


def test_mask_without_pixel_data_quarantines() -> None:
    ds = Dataset()
    ds.Modality = "DOC"
    assert (
        decide_burned_in(ds, BurnedInPolicy.MASK, regions=[Region(0, 0, 1, 1)]) is BurnedInDecision.QUARANTINE
    )


def test_mask_regions_blanks_every_frame_and_keeps_the_rest() -> None:
    pixels = np.full((3, 8, 10, 3), 200, dtype=np.uint8)  # frames, rows, columns, samples

    masked = mask_regions(pixels, [Region(2, 1, 4, 3)], frames=3)

    assert masked[:, 1:4, 2:6, :].max() == 0
    untouched = masked.copy()
    untouched[:, 1:4, 2:6, :] = 200
    assert (untouched == 200).all()
    assert (pixels == 200).all()  # the input is not changed


def test_mask_regions_on_a_single_grayscale_frame_with_clipping() -> None:
    pixels = np.arange(6 * 5, dtype=np.int16).reshape(6, 5)

    masked = mask_regions(pixels, [(3, 4, 10, 10)], fill=-1)

    assert (masked[4:, 3:] == -1).all()
    assert (masked[:4, :] == pixels[:4, :]).all()
    assert (masked[:, :3] == pixels[:, :3]).all()


@pytest.mark.parametrize("region", [Region(0, 0, 0, 5), Region(0, 0, 5, -1), Region(50, 50, 5, 5)])
def test_mask_regions_refuses_regions_that_mask_nothing(region: Region) -> None:
    with pytest.raises(InvalidRequest):
        mask_regions(np.zeros((8, 8), dtype=np.uint8), [region])
