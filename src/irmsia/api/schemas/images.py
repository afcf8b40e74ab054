"""Schemas of the browsing endpoints: patients, studies, series, images."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict


class PatientPublic(BaseModel):
    pseudonym: str
    studies: int
    last_study_date: date | None


class PatientPage(BaseModel):
    items: list[PatientPublic]
    total: int
    offset: int
    limit: int


class StudyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    patient_pseudonym: str
    study_uid: str
    study_date: date | None
    accession_pseudonym: str | None
    description: str | None
    modalities: list[str]
    created_at: datetime


class StudyPage(BaseModel):
    items: list[StudyPublic]
    total: int
    offset: int
    limit: int


class StoredObjectPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    kind: str
    frame: int
    media_type: str
    size: int
    plaintext_size: int
    sha256: str
    key_id: str


class ImagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    series_id: str
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    frames: int
    transfer_syntax: str
    status: str
    created_at: datetime


class ImageDetail(ImagePublic):
    study_id: str
    objects: list[StoredObjectPublic]


class SeriesPublic(BaseModel):
    id: str
    series_uid: str
    modality: str
    body_part: str | None
    description: str | None
    series_number: int | None
    images: int


class StudyDetail(StudyPublic):
    series: list[SeriesPublic]


class SeriesDetail(SeriesPublic):
    study_id: str
    instances: list[ImagePublic]


class SeriesListed(SeriesPublic):
    study_id: str
    patient_pseudonym: str
    study_date: date | None


class SeriesPage(BaseModel):
    items: list[SeriesListed]
    total: int
    offset: int
    limit: int


class ImagePage(BaseModel):
    items: list[ImagePublic]
    total: int
    offset: int
    limit: int


class QuarantinePage(BaseModel):
    items: list[ImagePublic]
    total: int


class KeyStatusPublic(BaseModel):
    current_key_id: str
    key_ids: list[str]
    wrapped_by_key: dict[str, int]


class RotationPublic(BaseModel):
    new_key_id: str
    rewrapped: int
