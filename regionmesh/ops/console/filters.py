"""The run list's query string, both ways: parsed into a ``RunFilter`` (values checked, never
trusted as SQL) and written back for the next page's link."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from regionmesh.models.console import MAX_PAGE, RunFilter
from regionmesh.models.tables import RUN_STATUSES

# Query parameter -> RunFilter field, for the plain text filters.
TEXT_FIELDS = {"tenant": "tenant", "workflow": "workflow", "owner": "owner_region", "key": "idempotency_key"}
MAX_TEXT = 200


@dataclass(frozen=True)
class Parsed:
    filter: RunFilter
    problems: tuple[str, ...]  # shown above the list; the offending filter is ignored


def _time(value: str) -> datetime:
    """An ISO date or date-time (a browser's datetime-local has no zone: UTC is meant)."""
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _cursor(value: str) -> tuple[datetime, uuid.UUID]:
    at, _, run = value.rpartition("_")
    return _time(at), uuid.UUID(run)


def parse(query: Mapping[str, str]) -> Parsed:
    """A ``RunFilter`` from the list page's query parameters; a value that does not parse is
    reported and left out rather than failing the page."""
    fields: dict[str, Any] = {}
    problems: list[str] = []
    for param, field in TEXT_FIELDS.items():
        value = query.get(param, "").strip()
        if len(value) > MAX_TEXT:
            problems.append(f"{param}: longer than {MAX_TEXT} characters")
        elif value:
            fields[field] = value
    status = query.get("status", "").strip()
    if status and status not in RUN_STATUSES:
        problems.append(f"status: one of {', '.join(RUN_STATUSES)}")
    elif status:
        fields["status"] = status
    for param in ("since", "until"):
        value = query.get(param, "").strip()
        if value:
            try:
                fields[param] = _time(value)
            except ValueError:
                problems.append(f"{param}: not a date or date-time (2026-12-07T10:00)")
    after = query.get("after", "").strip()
    if after:
        try:
            fields["after"] = _cursor(after)
        except ValueError:
            problems.append("after: not a page cursor")
    limit = query.get("limit", "").strip()
    if limit:
        if limit.isdigit() and 1 <= int(limit) <= MAX_PAGE:
            fields["limit"] = int(limit)
        else:
            problems.append(f"limit: a whole number from 1 to {MAX_PAGE}")
    return Parsed(RunFilter(**fields), tuple(problems))


def cursor_of(created_at: datetime, run_id: uuid.UUID) -> str:
    return f"{created_at.isoformat()}_{run_id}"


def query_of(f: RunFilter) -> dict[str, str]:
    """The query parameters that give ``f`` back (``parse(query_of(f)) == f``)."""
    out: dict[str, str] = {param: getattr(f, field) for param, field in TEXT_FIELDS.items() if getattr(f, field)}
    if f.status:
        out["status"] = f.status
    if f.since:
        out["since"] = f.since.isoformat()
    if f.until:
        out["until"] = f.until.isoformat()
    if f.after:
        out["after"] = cursor_of(*f.after)
    if f.limit != RunFilter().limit:
        out["limit"] = str(f.limit)
    return out


def next_page(f: RunFilter, last_created_at: datetime, last_id: uuid.UUID) -> str:
    """The query string of the page after one whose last row is (``last_created_at``, ``last_id``)."""
    return urlencode(query_of(replace(f, after=(last_created_at, last_id))))
