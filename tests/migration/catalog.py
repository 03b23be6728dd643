"""A database's schema read from the catalog as plain values that compare with ``==``.

Functions and triggers are compared by PostgreSQL's own rendering of them
(``pg_get_functiondef``, ``pg_get_triggerdef``), so two databases agree only if
name, arguments, return type, language, settings and body agree byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

# Alembic's bookkeeping; the models do not define it.
IGNORED_TABLES = ("alembic_version",)

Column = tuple[str, str, bool, str | None, str]  # name, type, not null, default, identity


@dataclass(frozen=True)
class Catalog:
    functions: dict[str, str]  # signature (regprocedure) -> CREATE OR REPLACE FUNCTION ...
    triggers: dict[tuple[str, str], tuple[str, str]]  # (table, trigger) -> (definition, tgenabled)
    tables: dict[str, tuple[Column, ...]]  # columns in physical order
    constraints: dict[tuple[str, str], str]
    indexes: dict[str, str]


def read_catalog(conn: Connection) -> Catalog:
    """Everything in schema ``public`` except the ignored tables."""
    ignored = {"ignored": list(IGNORED_TABLES)}
    functions = conn.execute(text(
        "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p "
        "WHERE p.pronamespace = 'public'::regnamespace"
    )).all()
    triggers = conn.execute(text(
        "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal"
    )).all()
    columns = conn.execute(text(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text "
        "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 "
        "  AND NOT a.attisdropped AND c.relname <> ALL (:ignored) "
        "ORDER BY c.relname, a.attnum"
    ), ignored).all()
    constraints = conn.execute(text(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "WHERE k.connamespace = 'public'::regnamespace AND c.relname <> ALL (:ignored)"
    ), ignored).all()
    indexes = conn.execute(text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> ALL (:ignored)"
    ), ignored).all()
    tables: dict[str, list[Column]] = {}
    for table, *column in columns:
        tables.setdefault(table, []).append((column[0], column[1], column[2], column[3], column[4]))
    return Catalog(
        functions={sig: body for sig, body in functions},
        triggers={(table, name): (definition, enabled) for table, name, definition, enabled in triggers},
        tables={table: tuple(cols) for table, cols in tables.items()},
        constraints={(table, name): definition for table, name, definition in constraints},
        indexes={name: definition for name, definition in indexes},
    )
