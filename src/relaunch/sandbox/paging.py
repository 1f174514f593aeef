"""DigitalOcean-style pagination: ``page``/``per_page`` in, ``links.pages`` and ``meta.total`` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, TypeVar
from urllib.parse import urlencode

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 200

T = TypeVar("T")


class PagingError(ValueError):
    """``page`` or ``per_page`` is not a positive integer; ``field`` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Page:
    """Which slice of a list to return."""

    page: int
    per_page: int

    def slice(self, items: Sequence[T]) -> list[T]:
        start = (self.page - 1) * self.per_page
        return list(items[start : start + self.per_page])


def parse_page(query: dict[str, list[str]]) -> Page:
    """Given a parsed query string, return the page asked for.

    ``per_page`` defaults to 20 and is capped at 200 as on DigitalOcean; ``page`` defaults
    to 1. Raise PagingError for a value that is not a positive integer.
    """
    values = {}
    for field, default in (("page", 1), ("per_page", DEFAULT_PER_PAGE)):
        raw = query.get(field, [None])[-1]
        if raw is None or raw == "":
            values[field] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            raise PagingError(field, f"{field} must be an integer, got {raw!r}") from None
        if value < 1:
            raise PagingError(field, f"{field} must be at least 1, got {value}")
        values[field] = value
    return Page(page=values["page"], per_page=min(values["per_page"], MAX_PER_PAGE))


def last_page(total: int, per_page: int) -> int:
    """Return the number of the last page (1 for an empty list)."""
    return max(1, -(-total // per_page))


def links(base_url: str, query: dict[str, list[str]], page: Page, total: int) -> dict[str, Any]:
    """Return the ``links`` object for ``page`` of a list of ``total`` items.

    ``base_url`` is the absolute URL of the list without a query; the other query
    parameters the client sent (filters) are kept in every link. ``first``/``prev`` appear
    past the first page, ``next``/``last`` before the last one, as DigitalOcean does.
    """
    last = last_page(total, page.per_page)
    kept = [(k, v) for k, values in query.items() if k not in ("page", "per_page") for v in values]

    def url(number: int) -> str:
        params = kept + [("page", str(number)), ("per_page", str(page.per_page))]
        return f"{base_url}?{urlencode(params)}"

    pages: dict[str, str] = {}
    if page.page > 1:
        pages["first"] = url(1)
        pages["prev"] = url(min(page.page - 1, last))
    if page.page < last:
        pages["last"] = url(last)
        pages["next"] = url(page.page + 1)
    return {"pages": pages}
