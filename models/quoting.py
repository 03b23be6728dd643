"""Quoting a value into SQL text where PostgreSQL takes no bind parameter (DDL such as
``CREATE SUBSCRIPTION … CONNECTION``, publication row filters, ``COMMENT ON``)."""

from __future__ import annotations


def literal(value: str) -> str:
    """``value`` as a standard SQL string literal (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"
