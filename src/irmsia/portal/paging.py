"""Page arithmetic for portal lists (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from irmsia.errors import InvalidRequest

MAX_PAGE = 100_000


@dataclass(frozen=True)
class Pagination:
    """Page ``page`` (1-based) of ``per_page`` items out of ``total``."""

    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def first_item(self) -> int:
        return 0 if self.total == 0 else (self.page - 1) * self.per_page + 1

    @property
    def last_item(self) -> int:
        return min(self.total, self.page * self.per_page)


def page_number(value: str | None) -> int:
    """A 1-based page number from a query string; empty means 1. Raises ``InvalidRequest``."""
    if value is None or value.strip() == "":
        return 1
    if not value.strip().isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise InvalidRequest("page must be a whole number from 1")
    return int(value)


def offset_of(page: int, per_page: int) -> int:
    return (page - 1) * per_page


def reversed_window(total: int, page: int, per_page: int) -> tuple[int, int]:
    """Offset and limit that give page ``page`` of a list read in the opposite order.

    A list served newest first holds the oldest items at its end: page 1 of "oldest first"
    is the last ``per_page`` items, reversed by the caller. Returns a limit of 0 past the end.
    """
    end = total - (page - 1) * per_page
    if end <= 0:
        return 0, 0
    start = max(0, end - per_page)
    return start, end - start
