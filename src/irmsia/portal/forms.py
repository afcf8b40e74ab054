"""Parse the values of HTML forms (pure). Browsers send empty fields as empty strings."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from irmsia.errors import InvalidRequest


def text_or_none(value: str | None, *, max_length: int = 128) -> str | None:
    """The stripped value, or None when empty. Raises ``InvalidRequest`` when too long."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > max_length:
        raise InvalidRequest(f"a field is longer than {max_length} characters")
    return value or None


def date_or_none(value: str | None, field: str) -> date | None:
    """An ISO date (YYYY-MM-DD) or None when empty. Raises ``InvalidRequest`` naming the field."""
    text = text_or_none(value, max_length=10)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{field} must be a date (YYYY-MM-DD)") from None


def date_range(first: date | None, last: date | None) -> tuple[date | None, date | None]:
    """Check that a range is in order. Raises ``InvalidRequest``."""
    if first and last and first > last:
        raise InvalidRequest("the start date must not be after the end date")
    return first, last


def day_bounds(first: date | None, last: date | None) -> tuple[datetime | None, datetime | None]:
    """UTC instants for an inclusive day range: from the first day's start to the day after the last."""
    since = datetime.combine(first, time(0), tzinfo=UTC) if first else None
    until = datetime.combine(last + timedelta(days=1), time(0), tzinfo=UTC) if last else None
    return since, until


def number(value: str | None, field: str) -> float | None:
    """A finite decimal number, or None when empty. Raises ``InvalidRequest`` naming the field."""
    text = text_or_none(value, max_length=32)
    if text is None:
        return None
    try:
        parsed = float(text)
    except ValueError:
        raise InvalidRequest(f"{field} must be a number") from None
    if parsed != parsed or parsed in (float("inf"), float("-inf")):
        raise InvalidRequest(f"{field} must be a finite number")
    return parsed


def safe_next(value: str | None, default: str) -> str:
    """A same-site portal path to return to after login; anything else gives ``default``.

    Only paths under /portal/ are accepted, never a scheme, host or protocol-relative URL,
    so the login form cannot be used as an open redirect.
    """
    if not value or not value.startswith("/portal/") or "//" in value or "\\" in value:
        return default
    if any(ord(ch) < 0x20 for ch in value):
        return default
    return value
