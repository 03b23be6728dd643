"""Structured log lines: ``event key=value ...`` with region, tenant, run and step.

A value that is not a plain token is written as a JSON string, so a newline, a quote or
``key=value`` inside a value can never forge a field or a second line.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

logger = logging.getLogger("regionmesh")

_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+,-]+")


def fmt(value: Any) -> str:
    """One value as it appears after ``key=`` (escaped unless a plain token)."""
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def event(level: int, name: str, **fields: Any) -> None:
    """Log ``name`` with its fields in a fixed order (region, tenant, run, step first)."""
    order = ("region", "tenant", "run", "step", "attempt")
    keys = [k for k in order if k in fields] + sorted(k for k in fields if k not in order)
    logger.log(level, "%s %s", name, " ".join(f"{k}={fmt(fields[k])}" for k in keys if fields[k] is not None))
