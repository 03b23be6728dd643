"""Structured log lines: ``event key=value ...`` with region, tenant, run and step."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("regionmesh")


def _fmt(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def event(level: int, name: str, **fields: Any) -> None:
    """Log ``name`` with its fields in a fixed order (region, tenant, run, step first)."""
    order = ("region", "tenant", "run", "step", "attempt")
    keys = [k for k in order if k in fields] + sorted(k for k in fields if k not in order)
    logger.log(level, "%s %s", name, " ".join(f"{k}={_fmt(fields[k])}" for k in keys if fields[k] is not None))
