"""The ingest pipeline: validate → de-identify → serialize → render → encrypt+store → index.

Each step reads and extends one ``IngestState``; none keeps state of its own. Blobs are
written under ``objects/<job>/…`` so a crash's leftovers are found by job id; the index
step commits the whole object graph (patient, study, series, instance, stored objects,
vault entries, audit record, ledger entries) in one transaction, so an object is either
fully indexed or not at all. Fail closed: if de-identification or encryption fails,
nothing is stored.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.crypto.digest import sha256_hex
from irmsia.crypto.envelope import EnvelopeCipher
from irmsia.db.base import new_id
from irmsia.db.imaging import Instance, Patient, Series, StoredObject, Study, VaultEntry
from irmsia.domain.deid import (
    BurnedInDecision,
    BurnedInPolicy,
    Deidentifier,
    DeidResult,
    Region,
    decide_burned_in,
    mask_regions,
)
from irmsia.domain.png import encode_png
from irmsia.domain.render import RenderOptions, render_frames, thumbnail
from irmsia.domain.validation import ValidatedObject, ValidationPolicy, parse_and_validate
from irmsia.errors import BurnedInAnnotationRejected, DeidentificationError, InvalidDicom, IrmsiaError
from irmsia.security.policy import SYSTEM
from irmsia.storage.base import BlobStore
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.context import RequestContext

ObjectHook = Callable[[Session, Sequence[StoredObject]], object]  # all objects of one job at once
Analyzer = Callable[[RequestContext, str, Dataset], object]

DICOM_MEDIA_TYPE = "application/dicom"
INDEX_ATTEMPTS = 3
WRITE_THREADS = 4  # concurrent blob writes of one job's objects
PNG_MEDIA_TYPE = "image/png"


@dataclass(frozen=True)
class IngestConfig:
    """Per-deployment choices for the pipeline (from Settings)."""

    validation: ValidationPolicy
    burned_in: BurnedInPolicy = BurnedInPolicy.REJECT
    mask_regions: tuple[Region, ...] = ()
    render: RenderOptions = field(default_factory=RenderOptions)
    png_level: int = 1


@dataclass
class PlannedObject:
    kind: str  # dicom | png | png16 | thumbnail
    frame: int
    media_type: str
    plaintext: bytes
    object_id: str = field(default_factory=new_id)
    storage_key: str = ""
    sha256: str = ""
    size: int = 0
    key_id: str = ""
    wrapped_key: bytes = b""


@dataclass
class IngestState:
    job_id: str
    submitted_by: str | None
    raw: bytes | None
    validation: ValidationPolicy | None = None  # a per-call override of the configured policy
    validated: ValidatedObject | None = None
    deid: DeidResult | None = None
    quarantined: bool = False
    duplicate_of: dict[str, str] | None = None
    objects: list[PlannedObject] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    frames: int = 0
    result: dict[str, Any] = field(default_factory=dict)


class IngestPipeline:
    """The steps of ingesting one object; shared by every executor."""

    kind = "ingest"

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        cipher: EnvelopeCipher,
        deidentifier: Deidentifier,
        config: IngestConfig,
        clock: Clock,
        audit: AuditLog,
        object_hooks: Sequence[ObjectHook] = (),
    ) -> None:
        self._sessions = sessions
        self._blobs = blobs
        self._cipher = cipher
        self._deid = deidentifier
        self._config = config
        self._clock = clock
        self._audit = audit
        self.object_hooks = list(object_hooks)
        # Set when AI_AUTO_ANALYZE is on: (context, image id, de-identified dataset) -> stored result.
        self.analyzer: Analyzer | None = None
        self._writes: ThreadPoolExecutor | None = None

    # --- Pipeline protocol -------------------------------------------------------------
    def steps(self) -> Sequence[tuple[str, Callable[[IngestState], None]]]:
        return (
            ("validate", self.validate),
            ("deidentify", self.deidentify),
            ("serialize", self.serialize),
            ("render", self.render),
            ("store", self.store),
            ("index", self.index),
            ("analyze", self.analyze),
        )

    def start(self, job_id: str, options: Mapping[str, Any], payload: bytes) -> IngestState:
        mode = options.get("validation")
        policy = replace(self._config.validation, mode=mode) if mode in ("strict", "lenient") else None
        return IngestState(
            job_id=job_id, submitted_by=options.get("submitted_by"), raw=payload, validation=policy
        )

    def result(self, state: IngestState) -> dict[str, Any]:
        return state.result

    def abort(self, state: IngestState) -> None:
        for key in state.written:
            self._blobs.delete(key)
        state.written.clear()

    def cleanup_job(self, job_id: str) -> int:
        prefix = _job_prefix(job_id)
        with self._sessions() as session:
            indexed = set(
                session.scalars(
                    select(StoredObject.storage_key).where(StoredObject.storage_key.startswith(prefix))
                )
            )
        removed = 0
        for key in list(self._blobs.list(prefix)):
            if key not in indexed:
                self._blobs.delete(key)
                removed += 1
        return removed

    # --- steps ---------------------------------------------------------------------------
    def validate(self, state: IngestState) -> None:
        assert state.raw is not None
        state.validated = parse_and_validate(state.raw, state.validation or self._config.validation)
        state.raw = None  # the original is not kept past parsing

    def deidentify(self, state: IngestState) -> None:
        assert state.validated is not None
        source = state.validated.dataset
        decision = decide_burned_in(source, self._config.burned_in, regions=self._config.mask_regions)
        if decision is BurnedInDecision.REJECT:
            raise BurnedInAnnotationRejected()
        masked = decision is BurnedInDecision.MASK
        if masked:
            source = _masked_copy(source, self._config.mask_regions)
        state.quarantined = decision is BurnedInDecision.QUARANTINE
        state.deid = self._deid.deidentify(source, pixels_cleaned=masked)
        state.validated = None  # drop the identifying dataset as soon as possible
        sop_uid = str(state.deid.dataset.SOPInstanceUID)
        with self._sessions() as session:
            # The common answer is "not stored": ask only that; the joins run for duplicates.
            known = session.scalar(select(Instance.id).where(Instance.sop_instance_uid == sop_uid))
        state.duplicate_of = self._stored_ids(sop_uid) if known is not None else None

    def serialize(self, state: IngestState) -> None:
        """The de-identified object as DICOM Part 10 (its own step, so that timings show it)."""
        assert state.deid is not None
        if state.duplicate_of is not None:
            return
        state.objects.append(PlannedObject("dicom", 0, DICOM_MEDIA_TYPE, _to_part10(state.deid.dataset)))

    def render(self, state: IngestState) -> None:
        assert state.deid is not None
        if state.duplicate_of is not None:
            return
        ds = state.deid.dataset
        if "PixelData" not in ds:
            return
        options = self._config.render
        first: np.ndarray | None = None
        for frame in render_frames(
            ds, RenderOptions(bits=options.bits, window=options.window, thumbnail_size=None)
        ):
            state.objects.append(
                PlannedObject(
                    "png",
                    frame.index,
                    PNG_MEDIA_TYPE,
                    encode_png(frame.display, level=self._config.png_level),
                )
            )
            if frame.display16 is not None:
                state.objects.append(
                    PlannedObject(
                        "png16",
                        frame.index,
                        PNG_MEDIA_TYPE,
                        encode_png(frame.display16, level=self._config.png_level),
                    )
                )
            if first is None:
                first = frame.display
            state.frames += 1
        if first is not None and options.thumbnail_size:
            small = thumbnail(first, options.thumbnail_size)
            state.objects.append(PlannedObject("thumbnail", 0, PNG_MEDIA_TYPE, encode_png(small, level=6)))

    def store(self, state: IngestState) -> None:
        """Encrypt every planned object, then write them all at once.

        The writes run on a few threads: a durable write mostly waits for the disk (or the
        network), so several overlap. Every key is in ``state.written`` before its write
        starts, and all writes have ended before an error is raised, so ``abort`` never
        races a write still in flight.
        """
        prefix = _job_prefix(state.job_id)
        writes: list[tuple[str, bytes | bytearray]] = []
        for planned in state.objects:
            sealed = self._cipher.encrypt(planned.object_id, planned.plaintext)
            planned.storage_key = f"{prefix}{planned.object_id}.bin"
            planned.sha256 = sha256_hex(sealed.blob)
            planned.size = len(sealed.blob)
            planned.key_id = sealed.wrapped_key.key_id
            planned.wrapped_key = sealed.wrapped_key.ciphertext
            writes.append((planned.storage_key, sealed.blob))
            state.written.append(planned.storage_key)
        if len(writes) == 1:
            self._blobs.put(*writes[0])
            return
        futures = [self._writer().submit(self._blobs.put, key, blob) for key, blob in writes]
        del writes
        wait(futures)
        for future in futures:
            future.result()  # re-raise the first failure, in object order

    def _writer(self) -> ThreadPoolExecutor:
        # Created on first use; its idle threads end when the pipeline is garbage-collected.
        if self._writes is None:
            self._writes = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="irmsia-put")
        return self._writes

    def index(self, state: IngestState) -> None:
        assert state.deid is not None
        now = self._clock()
        if state.duplicate_of is not None:
            state.result = _result("duplicate", state.duplicate_of, state, message="already stored", now=now)
            return
        ctx = RequestContext(principal=None, request_id=state.job_id)
        sop_uid = str(state.deid.dataset.SOPInstanceUID)
        for attempt in range(INDEX_ATTEMPTS):
            try:
                with self._sessions() as session, session.begin():
                    ids = self._index(session, state, now)
                    self._audit.record(
                        session,
                        ctx,
                        "ingest.store",
                        resource_type="image",
                        resource_id=ids["image_id"],
                        actor_name=f"job:{state.job_id}",
                        detail={"objects": len(state.objects), "quarantined": state.quarantined},
                    )
                break
            except DbIntegrityError:
                # A concurrent job inserted the same instance (ours is a duplicate) or the same
                # patient, study or series first (try again: it is found this time).
                duplicate = self._stored_ids(sop_uid)
                if duplicate is not None:
                    self.abort(state)
                    state.result = _result("duplicate", duplicate, state, message="already stored", now=now)
                    return
                if attempt == INDEX_ATTEMPTS - 1:
                    raise
        status = "quarantined" if state.quarantined else "stored"
        message = "quarantined for review: possible burned-in text" if state.quarantined else "stored"
        state.result = _result(status, ids, state, message=message, now=now, hooks=bool(self.object_hooks))

    def analyze(self, state: IngestState) -> None:
        """Optional AI analysis of a newly stored image; its failure never fails the ingest."""
        if self.analyzer is None or state.deid is None or state.result.get("status") != "stored":
            return
        ctx = RequestContext(principal=SYSTEM, request_id=state.job_id)
        try:
            self.analyzer(ctx, state.result["image_id"], state.deid.dataset)
            state.result["analysis"] = "done"
        except IrmsiaError as exc:  # e.g. a non-image object: recorded, the image stays stored
            state.result["analysis"] = exc.reason if isinstance(exc, InvalidDicom) else exc.code

    def _index(self, session: Session, state: IngestState, now: Any) -> dict[str, str]:
        """Add the object graph to ``session``; the caller's audit record flushes it, once.

        Rows get their ids here rather than at flush time, so nothing needs an early flush;
        patient, study and series are looked up in one round trip.
        """
        deid = state.deid
        assert deid is not None
        ds = deid.dataset
        study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        modality = _text(ds, "Modality").upper() or "OT"
        patient_id, study_id, modalities, series_id = session.execute(
            select(
                select(Patient.id).where(Patient.pseudonym == deid.pseudonym).scalar_subquery(),
                select(Study.id).where(Study.study_uid == study_uid).scalar_subquery(),
                select(Study.modalities).where(Study.study_uid == study_uid).scalar_subquery(),
                select(Series.id).where(Series.series_uid == series_uid).scalar_subquery(),
            )
        ).one()
        if patient_id is None:
            patient_id = new_id()
            session.add(
                Patient(
                    id=patient_id,
                    pseudonym=deid.pseudonym,
                    sex=_text(ds, "PatientSex") or None,
                    created_at=now,
                )
            )
            self._vault(session, "patient", deid.pseudonym, _identity_json(deid), now)
        if study_id is None:
            study_id = new_id()
            session.add(
                Study(
                    id=study_id,
                    patient_id=patient_id,
                    study_uid=study_uid,
                    study_date=_date(_text(ds, "StudyDate")),
                    accession_pseudonym=deid.identity.pseudonymised_accession or None,
                    description=_text(ds, "StudyDescription")[:128] or None,
                    modalities=modality,
                    created_at=now,
                    updated_at=now,
                )
            )
            if deid.identity.pseudonymised_accession and deid.identity.accession_number:
                self._vault(
                    session,
                    "accession",
                    deid.identity.pseudonymised_accession,
                    json.dumps({"accession_number": deid.identity.accession_number}),
                    now,
                )
        elif modality not in modalities.split(","):
            merged = ",".join(sorted({*modalities.split(","), modality} - {""}))[:128]
            session.execute(
                update(Study).where(Study.id == study_id).values(modalities=merged, updated_at=now)
            )
        if series_id is None:
            series_id = new_id()
            session.add(
                Series(
                    id=series_id,
                    study_id=study_id,
                    series_uid=series_uid,
                    modality=modality,
                    body_part=_text(ds, "BodyPartExamined")[:64] or None,
                    description=_text(ds, "SeriesDescription")[:128] or None,
                    series_number=_int(ds, "SeriesNumber"),
                    created_at=now,
                )
            )
        instance = Instance(
            id=new_id(),
            series_id=series_id,
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            instance_number=_int(ds, "InstanceNumber"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            frames=state.frames,
            transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            status="quarantined" if state.quarantined else "stored",
            job_id=state.job_id,
            created_at=now,
        )
        session.add(instance)
        stored_objects = []
        for planned in state.objects:
            stored = StoredObject(
                id=planned.object_id,
                instance=instance,
                kind=planned.kind,
                frame=planned.frame,
                storage_key=planned.storage_key,
                sha256=planned.sha256,
                size=planned.size,
                plaintext_size=len(planned.plaintext),
                media_type=planned.media_type,
                key_id=planned.key_id,
                wrapped_key=planned.wrapped_key,
                created_at=now,
            )
            session.add(stored)
            stored_objects.append(stored)
        if self.object_hooks:
            session.flush()  # hooks see the rows in the database; one flush for all of them
            for hook in self.object_hooks:
                hook(session, stored_objects)
        return {
            "image_id": instance.id,
            "series_id": series_id,
            "study_id": study_id,
            "patient_pseudonym": deid.pseudonym,
        }

    def _stored_ids(self, sop_instance_uid: str) -> dict[str, str] | None:
        """The ids of the instance already indexed under this SOP Instance UID, if any."""
        with self._sessions() as session:
            found = session.execute(
                select(Instance.id, Instance.series_id, Series.study_id, Patient.pseudonym)
                .join(Series, Instance.series_id == Series.id)
                .join(Study, Series.study_id == Study.id)
                .join(Patient, Study.patient_id == Patient.id)
                .where(Instance.sop_instance_uid == sop_instance_uid)
            ).first()
        if found is None:
            return None
        return {
            "image_id": found[0],
            "series_id": found[1],
            "study_id": found[2],
            "patient_pseudonym": found[3],
        }

    def _vault(self, session: Session, kind: str, pseudonym: str, plaintext: str, now: Any) -> None:
        exists = session.scalar(
            select(VaultEntry.id).where(VaultEntry.kind == kind, VaultEntry.pseudonym == pseudonym)
        )
        if exists is not None:
            return
        sealed = self._cipher.encrypt(f"vault:{kind}:{pseudonym}", plaintext.encode())
        session.add(
            VaultEntry(
                kind=kind,
                pseudonym=pseudonym,
                ciphertext=bytes(sealed.blob),
                key_id=sealed.wrapped_key.key_id,
                wrapped_key=sealed.wrapped_key.ciphertext,
                created_at=now,
            )
        )


def _job_prefix(job_id: str) -> str:
    return f"objects/{job_id[:2]}/{job_id}/"


def _to_part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DeidentificationError(
            f"the de-identified object could not be written ({type(exc).__name__})"
        ) from None
    return buffer.getvalue()


def _masked_copy(ds: Dataset, regions: Sequence[Region]) -> Dataset:
    """Mask burned-in regions; the pixels are stored uncompressed afterwards."""
    copy = Dataset(ds)
    copy.file_meta = Dataset(ds.file_meta)  # type: ignore[assignment]
    try:
        pixels = ds.pixel_array
    except (ValueError, RuntimeError, AttributeError, NotImplementedError) as exc:
        raise InvalidDicom(
            f"pixel data cannot be decoded for masking ({type(exc).__name__})", reason="pixel_data"
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    masked = mask_regions(pixels, regions, frames=frames)
    copy.PixelData = np.ascontiguousarray(masked).tobytes()
    copy.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        copy.PhotometricInterpretation = "RGB"
        copy.PlanarConfiguration = 0
    return copy


def _identity_json(deid: DeidResult) -> str:
    identity = deid.identity
    return json.dumps(
        {
            "patient_name": identity.patient_name,
            "patient_id": identity.patient_id,
            "patient_birth_date": identity.patient_birth_date,
            "date_shift_days": identity.date_shift_days,
        },
        sort_keys=True,
    )


def _result(
    status: str,
    ids: Mapping[str, str],
    state: IngestState,
    *,
    message: str,
    now: datetime,
    hooks: bool = False,
) -> dict[str, Any]:
    stored = status in ("stored", "quarantined")
    return {
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "status": status,
        "message": message,
        **ids,
        "deidentified": True,
        "converted": stored and any(o.kind == "png" for o in state.objects),
        "encrypted": True,
        "hash_registered": stored and hooks,
        "frames": state.frames,
    }


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _date(text: str) -> date | None:
    if len(text) >= 8 and text[:8].isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None
    return None
