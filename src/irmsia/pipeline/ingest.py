"""The ingest pipeline: validate → de-identify → serialize → render → encrypt+store → index.

Each step reads and extends one ``IngestState``; none keeps state of its own. Blobs are
written under ``objects/<j0j1>/<job>-…`` (the job id's first two hex digits name one of 256
directories, created once and shared by every job: no directory per job) so a crash's
leftovers are found by job id. The index is
the batch commit (``IngestPipeline.commit``): the whole object graph of every job in the
batch (patients, studies, series, instances, stored objects, vault entries, audit records
and their log entries) goes into the runner's one transaction, with the jobs' success
records, so an object is either fully indexed or not at all. Fail closed: if
de-identification or encryption fails, nothing is stored.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.crypto.digest import sha256_hex
from irmsia.crypto.envelope import EnvelopeCipher
from irmsia.db.base import new_id
from irmsia.db.engine import engine_of
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
from irmsia.domain.part10 import encode_part10
from irmsia.domain.png import encode_png
from irmsia.domain.render import RenderOptions, render_frames, thumbnail
from irmsia.domain.validation import ValidatedObject, ValidationPolicy, parse_and_validate
from irmsia.errors import BurnedInAnnotationRejected, DeidentificationError, InvalidDicom, IrmsiaError
from irmsia.ledger.entries import object_entry_of
from irmsia.security.policy import SYSTEM
from irmsia.storage.base import BlobStore
from irmsia.usecases.audit import AuditLog, AuditRecord
from irmsia.usecases.context import RequestContext

# (context, image id, de-identified dataset) -> the stored result's error code, None if it succeeded.
Analyzer = Callable[[RequestContext, str, Dataset], str | None]

DICOM_MEDIA_TYPE = "application/dicom"
PNG_MEDIA_TYPE = "image/png"
WRITING_JOBS = 4  # jobs of one worker whose blob writes may be in flight together
_INSTANCES: Table = Instance.__table__  # type: ignore[assignment]
_KNOWN = select(_INSTANCES.c.id).where(_INSTANCES.c.sop_instance_uid == bindparam("uid")).limit(1)
# The batch commit's lookups, built once (Core: an ORM select costs several times more to run).
_PATIENTS: Table = Patient.__table__  # type: ignore[assignment]
_STUDIES: Table = Study.__table__  # type: ignore[assignment]
_SERIES: Table = Series.__table__  # type: ignore[assignment]
_VAULT: Table = VaultEntry.__table__  # type: ignore[assignment]
_PATIENTS_BY_PSEUDONYM = select(_PATIENTS.c.pseudonym, _PATIENTS.c.id).where(
    _PATIENTS.c.pseudonym.in_(bindparam("keys", expanding=True))
)
_STUDIES_BY_UID = select(_STUDIES.c.study_uid, _STUDIES.c.id, _STUDIES.c.modalities).where(
    _STUDIES.c.study_uid.in_(bindparam("keys", expanding=True))
)
_SERIES_BY_UID = select(_SERIES.c.series_uid, _SERIES.c.id).where(
    _SERIES.c.series_uid.in_(bindparam("keys", expanding=True))
)
_VAULT_BY_PSEUDONYM = select(_VAULT.c.kind, _VAULT.c.pseudonym).where(
    _VAULT.c.pseudonym.in_(bindparam("keys", expanding=True))
)
_OBJECTS: Table = StoredObject.__table__  # type: ignore[assignment]
_INSERT_PATIENTS = insert(_PATIENTS)
_INSERT_VAULT = insert(_VAULT)
_INSERT_STUDIES = insert(_STUDIES)
_INSERT_SERIES = insert(_SERIES)
_INSERT_INSTANCES = insert(_INSTANCES)
_INSERT_OBJECTS = insert(_OBJECTS)
_SET_MODALITIES = (
    update(_STUDIES)
    .where(_STUDIES.c.id == bindparam("study"))
    .values(modalities=bindparam("merged"), updated_at=bindparam("now"))
)
_STORED_IDS = (  # SOP Instance UID -> the ids of the indexed instance
    select(
        _INSTANCES.c.sop_instance_uid,
        _INSTANCES.c.id,
        _INSTANCES.c.series_id,
        _SERIES.c.study_id,
        _PATIENTS.c.pseudonym,
    )
    .join(_SERIES, _INSTANCES.c.series_id == _SERIES.c.id)
    .join(_STUDIES, _SERIES.c.study_id == _STUDIES.c.id)
    .join(_PATIENTS, _STUDIES.c.patient_id == _PATIENTS.c.id)
    .where(_INSTANCES.c.sop_instance_uid.in_(bindparam("uids", expanding=True)))
)


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
    plaintext: bytes  # released once the object is encrypted (plaintext_size keeps its length)
    object_id: str = field(default_factory=new_id)
    plaintext_size: int = 0
    storage_key: str = ""  # the job's blob, shared by its objects
    blob_offset: int = 0  # where this object starts in it
    sha256: str = ""
    size: int = 0
    key_id: str = ""
    wrapped_key: bytes = b""


@dataclass(frozen=True)
class IndexFields:
    """What the index keeps of a de-identified object (read once, so the dataset can go)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    modality: str
    transfer_syntax: str
    patient_sex: str | None
    study_date: date | None
    study_description: str | None
    series_description: str | None
    body_part: str | None
    series_number: int | None
    instance_number: int | None
    rows: int | None
    columns: int | None

    @classmethod
    def of(cls, ds: Dataset) -> IndexFields:
        return cls(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            modality=_text(ds, "Modality").upper() or "OT",
            transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            patient_sex=_text(ds, "PatientSex") or None,
            study_date=_date(_text(ds, "StudyDate")),
            study_description=_text(ds, "StudyDescription")[:128] or None,
            series_description=_text(ds, "SeriesDescription")[:128] or None,
            body_part=_text(ds, "BodyPartExamined")[:64] or None,
            series_number=_int(ds, "SeriesNumber"),
            instance_number=_int(ds, "InstanceNumber"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
        )


@dataclass
class IngestState:
    job_id: str
    submitted_by: str | None
    raw: bytes | None
    validation: ValidationPolicy | None = None  # a per-call override of the configured policy
    validated: ValidatedObject | None = None
    deid: DeidResult | None = None
    fields: IndexFields | None = None
    quarantined: bool = False
    duplicate_of: dict[str, str] | None = None
    batch_duplicate: bool = False  # a copy of an object an earlier job of the same batch stores
    objects: list[PlannedObject] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    writing: Future[int] | None = None  # the blob write ``store`` started; ``settle`` waits
    frames: int = 0
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Rows:
    """The rows one batch commit inserts, in foreign-key order, and what it looked up."""

    patients: dict[str, str] = field(default_factory=dict)  # pseudonym -> id
    studies: dict[str, list[str]] = field(default_factory=dict)  # study UID -> [id, modalities]
    series: dict[str, str] = field(default_factory=dict)  # series UID -> id
    vault: set[tuple[str, str]] = field(default_factory=set)  # (kind, pseudonym) already kept
    new_patients: list[dict[str, Any]] = field(default_factory=list)
    new_studies: dict[str, dict[str, Any]] = field(default_factory=dict)  # study id -> row
    new_series: list[dict[str, Any]] = field(default_factory=list)
    new_vault: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    modalities: dict[str, str] = field(default_factory=dict)  # existing study id -> merged list


class IngestPipeline:
    """The steps of ingesting one object, and the batch commit; shared by every executor."""

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
    ) -> None:
        self._sessions = sessions
        self._engine = engine_of(sessions)
        self._blobs = blobs
        self._cipher = cipher
        self._deid = deidentifier
        self._config = config
        self._clock = clock
        # The audit log holds the transparency log: the commit appends every stored object's
        # entry through it, with the audit records, in the commit's transaction.
        self._audit = audit
        # Set when AI_AUTO_ANALYZE is on.
        self.analyzer: Analyzer | None = None
        self._writes: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # --- Pipeline protocol -------------------------------------------------------------
    def steps(self) -> Sequence[tuple[str, Callable[[IngestState], None]]]:
        return (
            ("validate", self.validate),
            ("deidentify", self.deidentify),
            ("serialize", self.serialize),
            ("render", self.render),
            ("store", self.store),
        )

    def start(self, job_id: str, options: Mapping[str, Any], payload: bytes) -> IngestState:
        mode = options.get("validation")
        policy = replace(self._config.validation, mode=mode) if mode in ("strict", "lenient") else None
        return IngestState(
            job_id=job_id, submitted_by=options.get("submitted_by"), raw=payload, validation=policy
        )

    def result(self, state: IngestState) -> dict[str, Any]:
        return state.result

    def settle(self, state: IngestState) -> None:
        """Wait for the job's blob writes; raises ``StorageError`` if one failed."""
        writing, state.writing = state.writing, None
        if writing is not None:
            writing.result()

    def abort(self, state: IngestState) -> None:
        if state.writing is not None:  # never delete under a write still in flight
            wait([state.writing])
            state.writing = None
        for key in state.written:
            self._blobs.delete(key)
        state.written.clear()

    def cleanup_job(self, job_id: str) -> int:
        removed = 0
        # One prefix covers the blob of this layout and those of earlier versions (a blob per
        # object, in a directory per job or in the shared directories).
        prefix = _job_prefix(job_id)
        with self._sessions() as session:
            indexed = set(
                session.scalars(
                    select(StoredObject.storage_key).where(StoredObject.storage_key.startswith(prefix))
                )
            )
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
        state.fields = IndexFields.of(state.deid.dataset)
        uid = state.fields.sop_instance_uid
        # Skip the blobs of an object stored before (the commit checks again). The common
        # answer is "not stored": ask only that, in Core on a pooled connection (an ORM
        # session costs several times more per job); the joins run for duplicates.
        with self._engine.connect() as connection:
            if connection.execute(_KNOWN, {"uid": uid}).first() is not None:
                state.duplicate_of = _stored_ids(connection, [uid]).get(uid)

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
        """Encrypt every planned object, each with its own data key, and start writing them
        in the background as **one** blob, one after the other (``put_stream``: atomically):
        one file to create, flush and rename per instance instead of one per object (the 2
        extra files of a CT slice cost ~1.5 CPU-ms on this VM's ext4, most of it in the kernel's
        inode allocation: ``bench/ingest.py``, 2 workers, 8.8-9.3 -> 7.4-7.6). The next job's
        steps run meanwhile, and ``settle`` waits for the write before the commit. The key is
        in ``state.written`` before the write starts, and ``abort`` waits for it, so it never
        races a write still in flight."""
        if self.analyzer is None and state.deid is not None:
            state.deid = replace(state.deid, dataset=Dataset())  # the index needs only state.fields
        if not state.objects:
            return
        key = _job_key(state.job_id)
        parts: list[bytes | bytearray] = []
        offset = 0
        for planned in state.objects:
            sealed = self._cipher.encrypt(planned.object_id, planned.plaintext)
            planned.plaintext_size = len(planned.plaintext)
            planned.plaintext = b""
            planned.storage_key, planned.blob_offset = key, offset
            planned.sha256 = sha256_hex(sealed.blob)
            planned.size = len(sealed.blob)
            planned.key_id = sealed.wrapped_key.key_id
            planned.wrapped_key = sealed.wrapped_key.ciphertext
            parts.append(sealed.blob)
            offset += planned.size
        state.written.append(key)
        state.writing = self._background().submit(self._blobs.put_stream, key, parts)

    def _background(self) -> ThreadPoolExecutor:
        # A job's writes run while the worker goes on with the next jobs' steps; several jobs'
        # writes overlap, so that their flushes to disk are waited for together (a journalled
        # file system commits concurrent fsyncs at once) instead of one job after the other.
        with self._lock:
            if self._writes is None:
                self._writes = ThreadPoolExecutor(max_workers=WRITING_JOBS, thread_name_prefix="irmsia-store")
            return self._writes

    # --- the batch commit ----------------------------------------------------------------
    def commit(self, session: Session, states: Sequence[IngestState]) -> None:
        """Index every object of the batch in ``session``: the runner commits it, once.

        One lookup per table for the whole batch, bulk inserts in foreign-key order, one log
        append for every stored object and one for the audit records. An object stored since
        its ``deidentify`` step (by another worker, or by an earlier job of this batch) is a
        duplicate: its blobs are deleted and nothing is inserted for it. Starts afresh each
        call, as the runner may call it again after a rollback.
        """
        now = self._clock()
        for state in states:
            if state.batch_duplicate:
                state.batch_duplicate, state.duplicate_of = False, None
            state.result = {}
        fresh = [state for state in states if state.duplicate_of is None]
        stored = _stored_ids(session.connection(), [_fields(state).sop_instance_uid for state in fresh])
        todo: list[IngestState] = []
        first_of: dict[str, IngestState] = {}
        for state in fresh:
            uid = _fields(state).sop_instance_uid
            if uid in stored:  # stored by another worker since this job checked
                state.duplicate_of = stored[uid]
                self.abort(state)
            elif uid in first_of:  # its blobs go once the commit succeeded (``after_commit``)
                state.batch_duplicate = True
            else:
                first_of[uid] = state
                todo.append(state)
        ids, entries = self._index(session, todo, now) if todo else ({}, [])
        records = []
        for state in todo:
            found = ids[state.job_id]
            status = "quarantined" if state.quarantined else "stored"
            message = "quarantined for review: possible burned-in text" if state.quarantined else "stored"
            state.result = _result(status, found, state, message=message, now=now)
            records.append(
                AuditRecord(
                    RequestContext(principal=None, request_id=state.job_id),
                    "ingest.store",
                    resource_type="image",
                    resource_id=found["image_id"],
                    actor_name=f"job:{state.job_id}",
                    detail={"objects": len(state.objects), "quarantined": state.quarantined},
                )
            )
        if records:
            # The objects' entries and the audit records': one log append, in this transaction.
            self._audit.record_many(session, records, after=entries)
        for state in states:
            if state.batch_duplicate:
                state.duplicate_of = ids[first_of[_fields(state).sop_instance_uid].job_id]
            if state.duplicate_of is not None:
                state.result = _result(
                    "duplicate", state.duplicate_of, state, message="already stored", now=now
                )

    def after_commit(self, state: IngestState) -> bool:
        """After the commit: drop the blobs of an in-batch duplicate; optional AI analysis.

        The analysis of a newly stored image never fails the ingest: its error is recorded
        in the result. Returns True when the result changed.
        """
        if state.batch_duplicate:
            self.abort(state)
        if self.analyzer is None or state.deid is None or state.result.get("status") != "stored":
            return False
        ctx = RequestContext(principal=SYSTEM, request_id=state.job_id)
        try:
            error = self.analyzer(ctx, state.result["image_id"], state.deid.dataset)
            state.result["analysis"] = error or "done"
        except IrmsiaError as exc:  # e.g. a non-image object: recorded, the image stays stored
            state.result["analysis"] = exc.reason if isinstance(exc, InvalidDicom) else exc.code
        return True

    def _index(
        self, session: Session, todo: Sequence[IngestState], now: datetime
    ) -> tuple[dict[str, dict[str, str]], list[bytes]]:
        """Insert the object graph of ``todo``; return each job's ids (image, series, study,
        patient) and the stored objects' log entries, which ``commit`` appends with the audit
        records (``AuditLog.record_many(after=…)``: one append, in this transaction)."""
        rows = self._lookup(session, todo)
        ids: dict[str, dict[str, str]] = {}
        entries: list[bytes] = []
        for state in todo:
            deid, f = state.deid, _fields(state)
            assert deid is not None
            patient_id = self._patient(rows, state, now)
            study_id = self._study(rows, state, patient_id, now)
            series_id = rows.series.get(f.series_uid)
            if series_id is None:
                series_id = rows.series[f.series_uid] = new_id()
                rows.new_series.append(
                    {
                        "id": series_id,
                        "study_id": study_id,
                        "series_uid": f.series_uid,
                        "modality": f.modality,
                        "body_part": f.body_part,
                        "description": f.series_description,
                        "series_number": f.series_number,
                        "created_at": now,
                    }
                )
            image_id = new_id()
            rows.instances.append(
                {
                    "id": image_id,
                    "series_id": series_id,
                    "sop_instance_uid": f.sop_instance_uid,
                    "sop_class_uid": f.sop_class_uid,
                    "instance_number": f.instance_number,
                    "rows": f.rows,
                    "columns": f.columns,
                    "frames": state.frames,
                    "transfer_syntax": f.transfer_syntax,
                    "status": "quarantined" if state.quarantined else "stored",
                    "job_id": state.job_id,
                    "created_at": now,
                }
            )
            for planned in state.objects:
                rows.objects.append(
                    {
                        "id": planned.object_id,
                        "instance_id": image_id,
                        "kind": planned.kind,
                        "frame": planned.frame,
                        "storage_key": planned.storage_key,
                        "blob_offset": planned.blob_offset,
                        "sha256": planned.sha256,
                        "size": planned.size,
                        "plaintext_size": planned.plaintext_size,
                        "media_type": planned.media_type,
                        "key_id": planned.key_id,
                        "wrapped_key": planned.wrapped_key,
                        "created_at": now,
                    }
                )
                entries.append(
                    object_entry_of(
                        object_id=planned.object_id,
                        instance_id=image_id,
                        kind=planned.kind,
                        frame=planned.frame,
                        sha256=planned.sha256,
                        size=planned.size,
                        key_id=planned.key_id,
                        time=now,
                    )
                )
            ids[state.job_id] = {
                "image_id": image_id,
                "series_id": series_id,
                "study_id": study_id,
                "patient_pseudonym": deid.pseudonym,
            }
        connection = session.connection()  # Core, prebuilt: every batch commit runs these
        for statement, values in (
            (_INSERT_PATIENTS, rows.new_patients),
            (_INSERT_VAULT, rows.new_vault),
            (_INSERT_STUDIES, list(rows.new_studies.values())),
            (_INSERT_SERIES, rows.new_series),
            (_INSERT_INSTANCES, rows.instances),
            (_INSERT_OBJECTS, rows.objects),
        ):
            if values:
                connection.execute(statement, values)
        if rows.modalities:
            connection.execute(
                _SET_MODALITIES,
                [
                    {"study": study_id, "merged": merged, "now": now}
                    for study_id, merged in rows.modalities.items()
                ],
            )
        return ids, entries

    def _lookup(self, session: Session, todo: Sequence[IngestState]) -> _Rows:
        """The batch's patients, studies, series and vault entries already indexed, one query each."""
        pseudonyms = {state.deid.pseudonym for state in todo if state.deid is not None}
        accessions = {
            state.deid.identity.pseudonymised_accession
            for state in todo
            if state.deid is not None and state.deid.identity.pseudonymised_accession
        }
        study_uids = {_fields(state).study_uid for state in todo}
        series_uids = {_fields(state).series_uid for state in todo}
        rows = _Rows()
        connection = session.connection()
        rows.patients = dict(connection.execute(_PATIENTS_BY_PSEUDONYM, {"keys": sorted(pseudonyms)}).all())
        rows.studies = {
            uid: [study_id, modalities]
            for uid, study_id, modalities in connection.execute(_STUDIES_BY_UID, {"keys": sorted(study_uids)})
        }
        rows.series = dict(connection.execute(_SERIES_BY_UID, {"keys": sorted(series_uids)}).all())
        rows.vault = {
            (kind, pseudonym)
            for kind, pseudonym in connection.execute(
                _VAULT_BY_PSEUDONYM, {"keys": sorted(pseudonyms | accessions)}
            )
        }
        return rows

    def _patient(self, rows: _Rows, state: IngestState, now: datetime) -> str:
        deid = state.deid
        assert deid is not None
        patient_id = rows.patients.get(deid.pseudonym)
        if patient_id is None:
            patient_id = rows.patients[deid.pseudonym] = new_id()
            rows.new_patients.append(
                {
                    "id": patient_id,
                    "pseudonym": deid.pseudonym,
                    "sex": _fields(state).patient_sex,
                    "created_at": now,
                }
            )
            self._vault(rows, "patient", deid.pseudonym, _identity_json(deid), now)
        return patient_id

    def _study(self, rows: _Rows, state: IngestState, patient_id: str, now: datetime) -> str:
        deid, f = state.deid, _fields(state)
        assert deid is not None
        known = rows.studies.get(f.study_uid)
        if known is None:
            study_id = new_id()
            rows.studies[f.study_uid] = [study_id, f.modality]
            rows.new_studies[study_id] = {
                "id": study_id,
                "patient_id": patient_id,
                "study_uid": f.study_uid,
                "study_date": f.study_date,
                "accession_pseudonym": deid.identity.pseudonymised_accession or None,
                "description": f.study_description,
                "modalities": f.modality,
                "created_at": now,
                "updated_at": now,
            }
            if deid.identity.pseudonymised_accession and deid.identity.accession_number:
                self._vault(
                    rows,
                    "accession",
                    deid.identity.pseudonymised_accession,
                    json.dumps({"accession_number": deid.identity.accession_number}),
                    now,
                )
            return study_id
        study_id, modalities = known
        if f.modality not in modalities.split(","):
            merged = ",".join(sorted({*modalities.split(","), f.modality} - {""}))[:128]
            known[1] = merged
            if study_id in rows.new_studies:
                rows.new_studies[study_id]["modalities"] = merged
            else:
                rows.modalities[study_id] = merged
        return study_id

    def _vault(self, rows: _Rows, kind: str, pseudonym: str, plaintext: str, now: datetime) -> None:
        if (kind, pseudonym) in rows.vault:
            return
        rows.vault.add((kind, pseudonym))
        sealed = self._cipher.encrypt(f"vault:{kind}:{pseudonym}", plaintext.encode())
        rows.new_vault.append(
            {
                "id": new_id(),
                "kind": kind,
                "pseudonym": pseudonym,
                "ciphertext": bytes(sealed.blob),
                "key_id": sealed.wrapped_key.key_id,
                "wrapped_key": sealed.wrapped_key.ciphertext,
                "created_at": now,
            }
        )


def _fields(state: IngestState) -> IndexFields:
    assert state.fields is not None, "deidentify has run"
    return state.fields


def _stored_ids(connection: Connection, sop_instance_uids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The ids of the instances already indexed under these SOP Instance UIDs, by UID."""
    if not sop_instance_uids:
        return {}
    found = connection.execute(_STORED_IDS, {"uids": sorted(set(sop_instance_uids))}).all()
    return {
        uid: {"image_id": image, "series_id": series, "study_id": study, "patient_pseudonym": pseudonym}
        for uid, image, series, study, pseudonym in found
    }


def _job_key(job_id: str) -> str:
    """The blob that holds a job's objects: in one of 256 shared directories, named by the job.

    A directory per job (as before) cost a directory inode, a mkdir and a directory fsync
    per job (the mkdir alone was ~3.5 % of ingest CPU on ext4), and so would a deeper tree
    until its directories exist; job ids are random hex, so the files spread evenly (ext4's
    hashed directories keep lookups fast at millions of entries).
    """
    return f"{_job_prefix(job_id)}.bin"


def _job_prefix(job_id: str) -> str:
    """What every blob key of a job starts with, in this layout (``<prefix>.bin``) and in
    those of earlier versions: ``<prefix>-<object>.bin`` (a blob per object) and
    ``<prefix>/<object>.bin`` (a directory per job). Job ids all have the same length, so
    no other job's key starts with it."""
    return f"objects/{job_id[:2]}/{job_id}"


def _to_part10(ds: Dataset) -> bytes:
    try:
        return encode_part10(ds)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise DeidentificationError(
            f"the de-identified object could not be written ({type(exc).__name__})"
        ) from None


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
        "hash_registered": stored,  # the commit registered every stored object in the log
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
