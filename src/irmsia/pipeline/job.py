"""Job states and transitions (pure): what happens to a job after each outcome."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from irmsia import errors


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED})


def spool_key(job_id: str) -> str:
    """The blob-store key of a job's encrypted input (opaque: the job id only)."""
    return f"spool/{job_id[:2]}/{job_id}.bin"


# Failures worth another attempt: the input may be fine and the environment was not.
RETRYABLE: tuple[type[errors.IrmsiaError], ...] = (
    errors.StorageError,
    errors.ExternalServiceError,
)


@dataclass(frozen=True)
class Failure:
    """What went wrong, in PHI-free words: a stable code and a sentence."""

    code: str
    detail: str
    retryable: bool
    # The input itself is at fault (bad DICOM, burned-in text, cannot be de-identified): running
    # it again cannot help, so its spooled original is deleted at once. Any other failed job
    # keeps its encrypted original until an admin retries or discards it.
    input_fault: bool = False


def classify(exc: BaseException) -> Failure:
    """Turn an exception from a step into a ``Failure``; never copies an unknown message."""
    if isinstance(exc, errors.IrmsiaError):
        code = exc.reason if isinstance(exc, errors.InvalidDicom) else exc.code
        retryable = isinstance(exc, RETRYABLE) and not isinstance(exc, errors.BlobNotFound)
        input_fault = isinstance(exc, errors.InputError | errors.DeidentificationError)
        return Failure(code=code, detail=exc.detail, retryable=retryable, input_fault=input_fault)
    # An unexpected error's message may quote data; keep only its type.
    return Failure(code="internal_error", detail=f"internal error ({type(exc).__name__})", retryable=False)


def after_failure(failure: Failure, attempt: int, max_attempts: int) -> JobState:
    """Retry a retryable failure while attempts remain; otherwise the job has failed."""
    if failure.retryable and attempt < max_attempts:
        return JobState.PENDING
    return JobState.FAILED


def after_crash(attempt: int, max_attempts: int) -> JobState:
    """A job found RUNNING at start-up was interrupted: run it again if attempts remain."""
    return JobState.PENDING if attempt < max_attempts else JobState.FAILED
