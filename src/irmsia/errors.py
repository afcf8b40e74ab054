"""IRMSIA's one exception tree.

Every error the platform raises on purpose is an ``IrmsiaError``. Each class carries a
stable machine-readable ``code``; the HTTP layer (``irmsia.api.errors``) maps classes to
status codes in one table, and the CLI prints ``detail`` as one line. Messages never
contain patient data, original UIDs, file names or key material: callers pass opaque ids.

    IrmsiaError
    ├── ConfigError                    invalid or unsafe settings; stops start-up
    ├── InputError                     the caller sent something unusable (4xx)
    │   ├── InvalidRequest             malformed body, wrong field types, bad query
    │   ├── PayloadTooLarge            over a configured size limit
    │   ├── UnsupportedMediaType       wrong content type
    │   └── InvalidDicom               not acceptable DICOM; ``reason`` names the problem
    │       └── BurnedInAnnotationRejected
    ├── AuthError
    │   ├── AuthenticationFailed       no/expired/forged token, wrong password (401)
    │   ├── PermissionDenied           authenticated but not allowed (403)
    │   └── TooManyAttempts            login throttled (429)
    ├── NotFound                       no such resource, or not visible to the caller (404)
    ├── Conflict                       state conflict, e.g. user exists (409)
    ├── CryptoError
    │   ├── IntegrityError             authentication tag/hash mismatch: tampered or wrong key
    │   └── UnknownKey                 key id not held by the key provider
    ├── StorageError
    │   └── BlobNotFound
    ├── DeidentificationError          de-identification could not be completed (fail closed)
    ├── LedgerError
    │   └── ProofError                 a Merkle proof or checkpoint does not verify
    ├── ExternalServiceError           a remote dependency (Vault, IPFS, Fabric, LLM) failed
    │   └── ServiceTimeout
    └── AIError                        an AI provider could not produce a valid result
        └── ProviderUnavailable        optional dependency or model files missing
"""

from __future__ import annotations


class IrmsiaError(Exception):
    """Root of every deliberate IRMSIA error."""

    code = "internal_error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.__class__.__doc__ or self.code
        super().__init__(self.detail)


class ConfigError(IrmsiaError):
    """The configuration is invalid or unsafe."""

    code = "config_error"


class InputError(IrmsiaError):
    """The request or file cannot be used."""

    code = "invalid_input"


class InvalidRequest(InputError):
    """The request is malformed."""

    code = "invalid_request"


class PayloadTooLarge(InputError):
    """The payload exceeds the configured limit."""

    code = "payload_too_large"


class UnsupportedMediaType(InputError):
    """The content type is not supported here."""

    code = "unsupported_media_type"


class InvalidDicom(InputError):
    """The object is not acceptable DICOM.

    ``reason`` is a short stable token (e.g. ``missing_attribute``); ``detail`` a sentence
    that names the problem without echoing any value from the file.
    """

    code = "invalid_dicom"

    def __init__(self, detail: str, reason: str = "invalid_dicom") -> None:
        self.reason = reason
        super().__init__(detail)


class BurnedInAnnotationRejected(InvalidDicom):
    """The image may carry burned-in patient text and the policy rejects it."""

    code = "burned_in_annotation"

    def __init__(self, detail: str = "image may contain burned-in annotations; rejected by policy") -> None:
        super().__init__(detail, reason="burned_in_annotation")


class AuthError(IrmsiaError):
    """Authentication or authorisation failed."""

    code = "auth_error"


class AuthenticationFailed(AuthError):
    """Not authenticated."""

    code = "not_authenticated"


class PermissionDenied(AuthError):
    """Not allowed for this role."""

    code = "forbidden"


class TooManyAttempts(AuthError):
    """Too many failed attempts; try again later."""

    code = "too_many_attempts"

    def __init__(self, detail: str | None = None, retry_after: int = 60) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


class NotFound(IrmsiaError):
    """The resource does not exist."""

    code = "not_found"


class Conflict(IrmsiaError):
    """The request conflicts with the current state."""

    code = "conflict"


class CryptoError(IrmsiaError):
    """A cryptographic operation failed."""

    code = "crypto_error"


class IntegrityError(CryptoError):
    """Integrity check failed: the data was modified or the key is wrong."""

    code = "integrity_error"


class UnknownKey(CryptoError):
    """The key id is not known to the key provider."""

    code = "unknown_key"


class StorageError(IrmsiaError):
    """The blob store failed."""

    code = "storage_error"


class BlobNotFound(StorageError):
    """No blob under that key."""

    code = "blob_not_found"


class DeidentificationError(IrmsiaError):
    """De-identification could not be completed; nothing was stored."""

    code = "deidentification_failed"


class LedgerError(IrmsiaError):
    """The ledger operation failed."""

    code = "ledger_error"


class ProofError(LedgerError):
    """The proof or checkpoint does not verify."""

    code = "proof_invalid"


class ExternalServiceError(IrmsiaError):
    """A remote service failed."""

    code = "external_service_error"


class ServiceTimeout(ExternalServiceError):
    """A remote service did not answer in time."""

    code = "service_timeout"


class AIError(IrmsiaError):
    """The AI provider could not produce a valid result."""

    code = "ai_error"


class ProviderUnavailable(AIError):
    """The AI provider is not installed or not configured."""

    code = "provider_unavailable"
