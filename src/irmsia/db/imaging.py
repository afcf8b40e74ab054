"""Tables of the image index: patient (pseudonym) → study → series → instance → stored objects.

Only de-identified values are stored: pseudonyms, replaced UIDs, shifted dates, cleaned
descriptions. The re-identification vault holds the original identity as ciphertext.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from irmsia.db.base import Base, new_id


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    sex: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (Index("ix_studies_date", "study_date"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[date | None] = mapped_column(Date)
    accession_pseudonym: Mapped[str | None] = mapped_column(String(64), index=True)
    description: Mapped[str | None] = mapped_column(String(128))
    modalities: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    body_part: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(128))
    series_number: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    """One de-identified SOP instance (an "image" in the original design's API)."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    series_id: Mapped[str] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    transfer_syntax: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="stored")  # stored | quarantined
    job_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]

    series: Mapped[Series] = relationship(back_populates="instances")
    objects: Mapped[list[StoredObject]] = relationship(
        back_populates="instance", cascade="all, delete-orphan", passive_deletes=True
    )


class StoredObject(Base):
    """One encrypted object: the de-identified DICOM, a rendered frame, or a thumbnail.

    It is the ``size`` bytes at ``blob_offset`` in the blob ``storage_key``: ingest writes the
    objects of one instance as one blob, one after the other (one file to create and flush
    instead of three or more); each object keeps its own data key, nonce and hash. Objects
    stored before that have a blob each (offset 0). ``wrapped_key`` is the object's data key
    wrapped by the KEK ``key_id``; deleting the row (crypto-shredding) makes the object
    unreadable even if a copy of its blob survives.
    """

    __tablename__ = "stored_objects"
    __table_args__ = (UniqueConstraint("instance_id", "kind", "frame", name="uq_stored_objects_kind_frame"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # dicom | png | png16 | thumbnail
    frame: Mapped[int] = mapped_column(Integer, default=0)
    storage_key: Mapped[str] = mapped_column(String(255), index=True)
    blob_offset: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    sha256: Mapped[str] = mapped_column(String(64))  # of the encrypted object as stored
    size: Mapped[int] = mapped_column(Integer)  # encrypted bytes, from blob_offset on
    plaintext_size: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(128), index=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]

    instance: Mapped[Instance] = relationship(back_populates="objects")


class VaultEntry(Base):
    """Re-identification vault: pseudonym → original identity, encrypted (envelope)."""

    __tablename__ = "vault_entries"
    __table_args__ = (UniqueConstraint("kind", "pseudonym", name="uq_vault_entries_kind_pseudonym"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))  # patient | accession
    pseudonym: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(128))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
