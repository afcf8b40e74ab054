"""Queries on the image index (patients, studies, series, instances, stored objects)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from irmsia.db import aistatus
from irmsia.db.imaging import Instance, Patient, Series, StoredObject, Study


@dataclass(frozen=True)
class StudyFilter:
    patient_pseudonym: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    modality: str | None = None
    accession_pseudonym: str | None = None
    include_quarantined: bool = False
    # AI summary (irmsia.db.aistatus): a status, a lowest risk, and the order of the list.
    ai_status: str | None = None
    min_risk: int | None = None
    sort: str = "newest"  # newest | oldest | risk (highest first; studies without a risk last)
    body_part: str | None = None  # Body Part Examined of one of its series (CS, upper case)


@dataclass(frozen=True)
class PatientRow:
    patient: Patient
    studies: int
    last_study_date: date | None


def find_patients(
    session: Session, *, pseudonym: str | None, offset: int, limit: int
) -> tuple[list[PatientRow], int]:
    counts = (
        select(
            Study.patient_id.label("pid"),
            func.count(Study.id).label("studies"),
            func.max(Study.study_date).label("last"),
        )
        .group_by(Study.patient_id)
        .subquery()
    )
    query: Select[Any] = select(Patient, counts.c.studies, counts.c.last).join(
        counts, counts.c.pid == Patient.id
    )
    if pseudonym:
        query = query.where(Patient.pseudonym == pseudonym)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(
        query.order_by(counts.c.last.desc().nulls_last(), Patient.pseudonym).offset(offset).limit(limit)
    ).all()
    return [PatientRow(row[0], int(row[1]), row[2]) for row in rows], int(total)


def find_studies(
    session: Session, flt: StudyFilter, *, offset: int, limit: int
) -> tuple[Sequence[Study], int]:
    query: Select[Any] = select(Study).join(Patient)
    if flt.patient_pseudonym:
        query = query.where(Patient.pseudonym == flt.patient_pseudonym)
    if flt.date_from:
        query = query.where(Study.study_date >= flt.date_from)
    if flt.date_to:
        query = query.where(Study.study_date <= flt.date_to)
    if flt.accession_pseudonym:
        query = query.where(Study.accession_pseudonym == flt.accession_pseudonym)
    if flt.modality:
        query = query.where(
            Study.id.in_(select(Series.study_id).where(Series.modality == flt.modality.upper()))
        )
    if flt.body_part:
        query = query.where(
            Study.id.in_(select(Series.study_id).where(Series.body_part == flt.body_part.upper()))
        )
    if not flt.include_quarantined:
        visible = select(Series.study_id).join(Instance).where(Instance.status == "stored")
        query = query.where(Study.id.in_(visible))
    order: list[Any] = [Study.study_date.desc().nulls_last(), Study.created_at.desc()]
    if flt.sort == "oldest":
        order = [Study.study_date.asc().nulls_last(), Study.created_at.asc()]
    if flt.ai_status or flt.min_risk is not None or flt.sort == "risk":
        ai = aistatus.summary()
        query = aistatus.join_on(query, Study.id, ai)
        if flt.ai_status:
            query = query.where(ai.status == flt.ai_status)
        if flt.min_risk is not None:
            query = query.where(ai.risk >= flt.min_risk)
        if flt.sort == "risk":
            order = [ai.risk.desc().nulls_last(), *order]
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.options(selectinload(Study.patient)).order_by(*order, Study.id).offset(offset).limit(limit)
    ).all()
    return rows, int(total)


def study_with_series(session: Session, study_id: str) -> Study | None:
    return session.scalar(
        select(Study)
        .where(Study.id == study_id)
        .options(selectinload(Study.patient), selectinload(Study.series).selectinload(Series.instances))
    )


def series_instances(session: Session, series_id: str, *, include_quarantined: bool) -> Series | None:
    series = session.scalar(
        select(Series)
        .where(Series.id == series_id)
        .options(selectinload(Series.instances), selectinload(Series.study))
    )
    return series


def instance(session: Session, image_id: str) -> Instance | None:
    return session.scalar(
        select(Instance)
        .where(Instance.id == image_id)
        .options(selectinload(Instance.objects), selectinload(Instance.series).selectinload(Series.study))
    )


def stored_object(session: Session, image_id: str, kind: str, frame: int) -> StoredObject | None:
    return session.scalar(
        select(StoredObject).where(
            StoredObject.instance_id == image_id, StoredObject.kind == kind, StoredObject.frame == frame
        )
    )


def quarantined(session: Session, *, offset: int, limit: int) -> tuple[Sequence[Instance], int]:
    query = select(Instance).where(Instance.status == "quarantined")
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.options(selectinload(Instance.series)).order_by(Instance.created_at).offset(offset).limit(limit)
    ).all()
    return rows, int(total)


@dataclass(frozen=True)
class SeriesFilter:
    study_id: str | None = None
    patient_pseudonym: str | None = None
    modality: str | None = None
    body_part: str | None = None
    include_quarantined: bool = False


@dataclass(frozen=True)
class SeriesRow:
    series: Series
    images: int  # instances the caller may see


def find_series(
    session: Session, flt: SeriesFilter, *, offset: int, limit: int
) -> tuple[list[SeriesRow], int]:
    """Series matching ``flt``: newest study first, then by series number.

    Without ``include_quarantined`` a series counts (and appears) only with its stored
    instances, so a series whose every instance is quarantined is not listed.
    """
    visible = select(Instance.series_id.label("sid"), func.count(Instance.id).label("images"))
    if not flt.include_quarantined:
        visible = visible.where(Instance.status == "stored")
    counts = visible.group_by(Instance.series_id).subquery()
    query: Select[Any] = (
        select(Series, counts.c.images)
        .join(counts, counts.c.sid == Series.id)
        .join(Study, Study.id == Series.study_id)
    )
    if flt.study_id:
        query = query.where(Series.study_id == flt.study_id)
    if flt.patient_pseudonym:
        query = query.join(Patient, Patient.id == Study.patient_id).where(
            Patient.pseudonym == flt.patient_pseudonym
        )
    if flt.modality:
        query = query.where(Series.modality == flt.modality.upper())
    if flt.body_part:
        query = query.where(Series.body_part == flt.body_part.upper())
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(
        query.options(selectinload(Series.study).selectinload(Study.patient))
        .order_by(
            Study.study_date.desc().nulls_last(),
            Study.created_at.desc(),
            Study.id,
            Series.series_number.asc().nulls_last(),
            Series.created_at,
            Series.id,
        )
        .offset(offset)
        .limit(limit)
    ).all()
    return [SeriesRow(row[0], int(row[1])) for row in rows], int(total)


@dataclass(frozen=True)
class InstanceFilter:
    series_id: str | None = None
    study_id: str | None = None
    include_quarantined: bool = False


def find_instances(
    session: Session, flt: InstanceFilter, *, offset: int, limit: int
) -> tuple[Sequence[Instance], int]:
    """Instances matching ``flt``, series by series (newest study first), in instance order."""
    query: Select[Any] = (
        select(Instance)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
    )
    if flt.series_id:
        query = query.where(Instance.series_id == flt.series_id)
    if flt.study_id:
        query = query.where(Series.study_id == flt.study_id)
    if not flt.include_quarantined:
        query = query.where(Instance.status == "stored")
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.options(selectinload(Instance.series))
        .order_by(
            Study.study_date.desc().nulls_last(),
            Study.created_at.desc(),
            Study.id,
            Series.series_number.asc().nulls_last(),
            Series.id,
            Instance.instance_number.asc().nulls_last(),
            Instance.created_at,
            Instance.id,
        )
        .offset(offset)
        .limit(limit)
    ).all()
    return rows, int(total)
