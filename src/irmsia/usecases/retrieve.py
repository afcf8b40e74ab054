"""Read stored objects (decrypted on the fly), the re-identification vault, and quarantine review.

Every access is authorised and audited with the opaque image id. Decryption is streamed
for large objects: a tampered or truncated blob raises ``IntegrityError`` instead of
returning garbage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from irmsia.clock import Clock
from irmsia.crypto.envelope import EnvelopeCipher
from irmsia.crypto.keys import WrappedKey
from irmsia.db import index
from irmsia.db.engine import transaction
from irmsia.db.imaging import Instance, Series, StoredObject, Study, VaultEntry
from irmsia.errors import BlobNotFound, Conflict, NotFound
from irmsia.security.policy import Permission, authorize
from irmsia.storage.base import BlobStore
from irmsia.usecases.audit import AuditLog
from irmsia.usecases.context import RequestContext

STREAM_THRESHOLD = 8 << 20  # decrypt bigger objects chunk by chunk
_THUMBNAILS = select(
    StoredObject.instance_id,
    StoredObject.id,
    StoredObject.storage_key,
    StoredObject.blob_offset,
    StoredObject.size,
    StoredObject.key_id,
    StoredObject.wrapped_key,
).where(
    StoredObject.instance_id.in_(bindparam("ids", expanding=True)),
    StoredObject.kind == "thumbnail",
    StoredObject.frame == 0,
)


@dataclass(frozen=True)
class Download:
    media_type: str
    size: int
    chunks: Iterator[bytes]


@dataclass
class Retrieve:
    sessions: sessionmaker[Session]
    blobs: BlobStore
    cipher: EnvelopeCipher
    audit: AuditLog
    clock: Clock

    def image(self, ctx: RequestContext, image_id: str) -> Instance:
        """An instance with its stored objects (metadata only)."""
        principal = authorize(ctx.principal, Permission.READ_IMAGES)
        with transaction(self.sessions) as session:
            instance = index.instance(session, image_id)
            if instance is None or (instance.status != "stored" and not principal.can(Permission.QUARANTINE)):
                raise NotFound("no such image")
            self.audit.record(session, ctx, "image.read", resource_type="image", resource_id=image_id)
            return instance

    def download(self, ctx: RequestContext, image_id: str, kind: str, frame: int = 0) -> Download:
        """Decrypt one stored object of an image: ``dicom``, ``png``, ``png16`` or ``thumbnail``."""
        principal = authorize(ctx.principal, Permission.READ_IMAGES)
        with transaction(self.sessions) as session:
            instance = session.get(Instance, image_id)
            if instance is None or (instance.status != "stored" and not principal.can(Permission.QUARANTINE)):
                raise NotFound("no such image")
            stored = index.stored_object(session, image_id, kind, frame)
            if stored is None:
                raise NotFound(f"no {kind} for that image and frame")
            self.audit.record(
                session,
                ctx,
                f"image.download.{kind}",
                resource_type="image",
                resource_id=image_id,
                detail={"frame": frame} if kind in ("png", "png16") else {},
            )
            key, object_id = stored.storage_key, stored.id
            span = {"offset": stored.blob_offset, "length": stored.size}
            wrapped = WrappedKey(stored.key_id, stored.wrapped_key)
            media_type, size = stored.media_type, stored.plaintext_size
        if size <= STREAM_THRESHOLD:
            data = self.cipher.decrypt(object_id, self.blobs.get(key, **span), wrapped)
            return Download(media_type, len(data), iter((data,)))
        chunks = self.cipher.decrypt_stream(object_id, self.blobs.iter_chunks(key, **span), wrapped)
        return Download(media_type, size, chunks)

    def thumbnails_in(self, session: Session, image_ids: Sequence[str]) -> dict[str, bytes]:
        """The decrypted thumbnails of ``image_ids``, by image id, read in ``session``.

        Neither authorised nor audited here: for a use case that has authorised, and audits, a
        read the thumbnails are part of (a study's report shows its images' thumbnails, and
        its read is recorded once as ``report.read``, not once per image). Images without a
        thumbnail, or whose blob is gone, are left out; a tampered blob raises
        ``IntegrityError``.
        """
        if not image_ids:
            return {}
        rows = session.execute(_THUMBNAILS, {"ids": sorted(set(image_ids))}).all()
        found: dict[str, bytes] = {}
        for image_id, object_id, key, offset, size, key_id, wrapped in rows:
            try:
                found[image_id] = self.cipher.decrypt(
                    object_id, self.blobs.get(key, offset=offset, length=size), WrappedKey(key_id, wrapped)
                )
            except BlobNotFound:
                continue
        return found

    def reidentify(self, ctx: RequestContext, kind: str, pseudonym: str) -> dict[str, object]:
        """The original identity behind a pseudonym (admins only, always audited)."""
        authorize(ctx.principal, Permission.REIDENTIFY)
        with transaction(self.sessions) as session:
            entry = session.scalar(
                select(VaultEntry).where(VaultEntry.kind == kind, VaultEntry.pseudonym == pseudonym)
            )
            self.audit.record(
                session,
                ctx,
                "vault.read",
                resource_type=kind,
                resource_id=pseudonym,
                detail={"found": entry is not None},
            )
            found = (entry.ciphertext, WrappedKey(entry.key_id, entry.wrapped_key)) if entry else None
        if found is None:  # raised after the commit: a failed look-up is audited too
            raise NotFound("no vault entry for that pseudonym")
        ciphertext, wrapped = found
        plaintext = self.cipher.decrypt(f"vault:{kind}:{pseudonym}", ciphertext, wrapped)
        result: dict[str, object] = json.loads(plaintext)
        return result

    def quarantined(
        self, ctx: RequestContext, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[Instance], int]:
        authorize(ctx.principal, Permission.QUARANTINE)
        with transaction(self.sessions) as session:
            rows, total = index.quarantined(session, offset=offset, limit=limit)
            self.audit.record(
                session, ctx, "quarantine.list", resource_type="image", detail={"returned": len(rows)}
            )
            return list(rows), total

    def release(self, ctx: RequestContext, image_id: str) -> Instance:
        """An admin reviewed a quarantined image and found no identifying text: make it visible."""
        authorize(ctx.principal, Permission.QUARANTINE)
        with transaction(self.sessions) as session:
            instance = session.get(Instance, image_id)
            if instance is None:
                raise NotFound("no such image")
            if instance.status != "quarantined":
                raise Conflict("the image is not in quarantine")
            instance.status = "stored"
            self.audit.record(session, ctx, "quarantine.release", resource_type="image", resource_id=image_id)
            return instance

    def delete_image(self, ctx: RequestContext, image_id: str) -> int:
        """Delete one image: its data keys first (crypto-shredding), then its blobs."""
        authorize(ctx.principal, Permission.DELETE_IMAGES)
        with transaction(self.sessions) as session:
            instance = session.get(Instance, image_id)
            if instance is None:
                raise NotFound("no such image")
            keys = self._shred(session, [instance])
            self.audit.record(session, ctx, "image.delete", resource_type="image", resource_id=image_id)
        return self._remove_blobs(keys)

    def delete_study(self, ctx: RequestContext, study_id: str) -> int:
        """Delete a study: every data key is destroyed, so its blobs are unreadable even in backups."""
        authorize(ctx.principal, Permission.DELETE_IMAGES)
        with transaction(self.sessions) as session:
            study = session.get(Study, study_id)
            if study is None:
                raise NotFound("no such study")
            instances = list(
                session.scalars(select(Instance).join(Series).where(Series.study_id == study_id)).all()
            )
            keys = self._shred(session, instances)
            for series in list(study.series):
                session.delete(series)
            session.delete(study)
            self.audit.record(
                session,
                ctx,
                "study.delete",
                resource_type="study",
                resource_id=study_id,
                detail={"images": len(instances)},
            )
        return self._remove_blobs(keys)

    @staticmethod
    def _shred(session: Session, instances: list[Instance]) -> list[str]:
        keys: list[str] = []
        for instance in instances:
            objects = session.scalars(
                select(StoredObject).where(StoredObject.instance_id == instance.id)
            ).all()
            keys.extend(obj.storage_key for obj in objects)
            for obj in objects:
                session.delete(obj)  # the wrapped data key goes with the row
            session.delete(instance)
        session.flush()
        return keys

    def _remove_blobs(self, keys: list[str]) -> int:
        unique = list(dict.fromkeys(keys))  # the objects of an instance share one blob
        for key in unique:
            self.blobs.delete(key)
        return len(unique)
