"""Synthetic DICOM builders for tests.

Every builder returns an in-memory ``pydicom.Dataset`` with file meta set, filled with
predictable fake identities. ``PHI`` lists the canary strings planted in identifying
attributes, so tests can assert that none survives de-identification anywhere.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

DigitalXRayPresentation = "1.2.840.10008.5.1.4.1.1.1.1"
ComputedRadiographyStorage = "1.2.840.10008.5.1.4.1.1.1"
UltrasoundMultiFrameStorage = "1.2.840.10008.5.1.4.1.1.3.1"
EnhancedSRStorage = "1.2.840.10008.5.1.4.1.1.88.22"

# Canary values: each is unique enough that a substring search over any output finds it.
PHI = {
    "PatientName": "Canaryname^Zelda^Q",
    "PatientID": "PIDCANARY4711",
    "PatientBirthDate": "19410302",
    "PatientAddress": "12 Canary Lane, Birdtown",
    "PatientTelephoneNumbers": "555-0199-CANARY",
    "OtherPatientIDs": "OTHERPIDCANARY",
    "InstitutionName": "Canary General Hospital",
    "InstitutionAddress": "1 Hospital Road Canaryville",
    "ReferringPhysicianName": "Drcanary^Referring",
    "PerformingPhysicianName": "Drcanary^Performing",
    "OperatorsName": "Opcanary^Tech",
    "AccessionNumber": "ACCCANARY99",
    "StudyID": "STUDYIDCANARY",
    "ImageComments": "Patient Canaryname complained of pain",
    "StudyDescription": "CT CHEST for Canaryname",
    "StationName": "CANARYSTATION",
    "DeviceSerialNumber": "SNCANARY123",
    "PatientComments": "Lives with canaryspouse",
    "AdditionalPatientHistory": "History canaryhistory",
    "MilitaryRank": "Canarycaptain",
    "PrivateCreatorValue": "CANARYPRIVATE",
    "PrivateValue": "PRIVATECANARYVALUE",
    "NestedName": "Nestedcanary^Person",
}

PHI_DATES = ["19410302", "20240105", "20240106"]


def _file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CANARYIMPL"
    meta.SourceApplicationEntityTitle = "CANARYAE"
    return meta


def _identity(ds: Dataset, patient_id: str, patient_name: str) -> None:
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = PHI["PatientBirthDate"]
    ds.PatientSex = "F"
    ds.PatientAge = "083Y"
    ds.PatientAddress = PHI["PatientAddress"]
    ds.PatientTelephoneNumbers = PHI["PatientTelephoneNumbers"]
    ds.OtherPatientIDs = PHI["OtherPatientIDs"]
    ds.MilitaryRank = PHI["MilitaryRank"]
    ds.PatientComments = PHI["PatientComments"]
    ds.AdditionalPatientHistory = PHI["AdditionalPatientHistory"]


def _study(ds: Dataset, study_uid: str, series_uid: str, modality: str) -> None:
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.StudyDate = "20240105"
    ds.SeriesDate = "20240105"
    ds.AcquisitionDate = "20240106"
    ds.ContentDate = "20240106"
    ds.StudyTime = "101500"
    ds.SeriesTime = "101600"
    ds.ContentTime = "101700"
    ds.Modality = modality
    ds.AccessionNumber = PHI["AccessionNumber"]
    ds.StudyID = PHI["StudyID"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.InstitutionName = PHI["InstitutionName"]
    ds.InstitutionAddress = PHI["InstitutionAddress"]
    ds.ReferringPhysicianName = PHI["ReferringPhysicianName"]
    ds.PerformingPhysicianName = PHI["PerformingPhysicianName"]
    ds.OperatorsName = PHI["OperatorsName"]
    ds.StationName = PHI["StationName"]
    ds.DeviceSerialNumber = PHI["DeviceSerialNumber"]
    ds.Manufacturer = "AcmeScanners"
    ds.StudyDescription = PHI["StudyDescription"]
    ds.SeriesDescription = "AXIAL 5mm"
    ds.ImageComments = PHI["ImageComments"]
    ds.BodyPartExamined = "CHEST"


def _pixels(ds: Dataset, array: np.ndarray, *, signed: bool, photometric: str = "MONOCHROME2") -> None:
    frames = 1 if array.ndim == 2 or (array.ndim == 3 and photometric == "RGB") else array.shape[0]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (array.shape[-3], array.shape[-2]) if photometric == "RGB" else array.shape[-2:]
    ds.BitsAllocated = array.dtype.itemsize * 8
    ds.BitsStored = (
        ds.BitsAllocated
        if photometric == "RGB"
        else min(ds.BitsAllocated, 12 if ds.BitsAllocated == 16 else 8)
    )
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(array).tobytes()


def add_phi_extras(ds: Dataset) -> Dataset:
    """Plant canaries in a nested sequence and in a private block."""
    nested = Dataset()
    nested.ReferencedSOPClassUID = CTImageStorage
    nested.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    inner = Dataset()
    inner.PersonName = PHI["NestedName"]
    inner.PatientID = PHI["PatientID"]
    nested.PersonIdentificationCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([nested])
    block = ds.private_block(0x0099, PHI["PrivateCreatorValue"], create=True)
    block.add_new(0x01, "LO", PHI["PrivateValue"])
    return ds


def make_ct(
    *,
    patient_id: str = PHI["PatientID"],
    patient_name: str = PHI["PatientName"],
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    rows: int = 64,
    columns: int = 64,
    seed: int = 0,
    phi_extras: bool = True,
) -> Dataset:
    """A 16-bit signed CT slice (HU = stored - 1024) with planted identifiers."""
    sop_uid = sop_uid or generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(CTImageStorage, sop_uid, ExplicitVRLittleEndian)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    _identity(ds, patient_id, patient_name)
    _study(ds, study_uid or generate_uid(), series_uid or generate_uid(), "CT")
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 2000, size=(rows, columns), dtype=np.int16)
    _pixels(ds, array, signed=True)
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    if phi_extras:
        add_phi_extras(ds)
    return ds


def make_cr(*, rows: int = 128, columns: int = 96, monochrome1: bool = False, seed: int = 1) -> Dataset:
    """An unsigned 12-bit CR chest image."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(ComputedRadiographyStorage, sop_uid, ExplicitVRLittleEndian)
    ds.SOPClassUID = ComputedRadiographyStorage
    ds.SOPInstanceUID = sop_uid
    _identity(ds, PHI["PatientID"], PHI["PatientName"])
    _study(ds, generate_uid(), generate_uid(), "CR")
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16)
    _pixels(ds, array, signed=False, photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2")
    ds.ViewPosition = "PA"
    ds.BurnedInAnnotation = "NO"
    return ds


def make_multiframe_us(*, frames: int = 3, rows: int = 32, columns: int = 48) -> Dataset:
    """An RGB ultrasound cine loop; no BurnedInAnnotation flag (US is suspect by default)."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(UltrasoundMultiFrameStorage, sop_uid, ExplicitVRLittleEndian)
    ds.SOPClassUID = UltrasoundMultiFrameStorage
    ds.SOPInstanceUID = sop_uid
    _identity(ds, PHI["PatientID"], PHI["PatientName"])
    _study(ds, generate_uid(), generate_uid(), "US")
    array = np.zeros((frames, rows, columns, 3), dtype=np.uint8)
    for f in range(frames):
        array[f, :, :, f % 3] = 50 * (f + 1)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.FrameTime = 33.3
    ds.PixelData = array.tobytes()
    return ds


def make_secondary_capture() -> Dataset:
    """A secondary capture image (may carry burned-in text) without BurnedInAnnotation."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(SecondaryCaptureImageStorage, sop_uid, ExplicitVRLittleEndian)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    _identity(ds, PHI["PatientID"], PHI["PatientName"])
    _study(ds, generate_uid(), generate_uid(), "OT")
    _pixels(ds, np.full((16, 16), 7, dtype=np.uint8), signed=False)
    return ds


def to_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    """Serialise as a DICOM Part 10 file (with or without the 128-byte preamble)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data if preamble else data[132:]


def contains_phi(blob: bytes | str, values: Iterable[str] | None = None) -> list[str]:
    """Return the canary values whose distinctive parts occur in ``blob`` (case-insensitive)."""
    text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
    lowered = text.lower()
    found = []
    for value in values if values is not None else PHI.values():
        for part in value.replace("^", " ").replace(",", " ").split():
            distinctive = "canary" in part.lower() or (part.isdigit() and len(part) >= 6)
            if distinctive and part.lower() in lowered:
                found.append(value)
                break
    return found
