"""The row hashes ``verify`` compares between regions: per bucket of the primary key's hash a
count and an XOR of row hashes (order-independent), the rows of differing buckets, and payload
rows held outside their allowed zones."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from regionmesh.models.quoting import literal


def primary_key(conn: Connection, table: str) -> list[str]:
    """The columns of ``table``'s primary key in key order ([] without one): ``rm_primary_key``
    (conflicts.sql, from revision 0018), the lookup the conflict and delete generators key rows by."""
    return list(conn.execute(text("SELECT rm_primary_key(CAST(:t AS regclass))"), {"t": table}).scalar() or [])


def _key_expr(pk: list[str]) -> str:
    return " || ',' || ".join(f"{c}::text" for c in pk)


def _in_zones(zones: list[str] | None) -> str:
    """A condition on a payload table's ``zone``: exactly these zones ('' is unzoned); None: all rows."""
    return "true" if zones is None else "t.zone IN (" + ", ".join(literal(z) for z in sorted(zones)) + ")"


def bucket_hashes(engine: Engine, table: str, buckets: int, zones: list[str] | None = None) -> dict[int, tuple[int, int]]:
    """Per bucket of the key's hash: (row count, XOR of 64-bit row hashes). Order-independent.
    ``zones``: only a payload table's rows of these zones (verify compares each zone apart)."""
    with engine.connect() as conn:
        conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        key = _key_expr(primary_key(conn, table))
        rows = conn.execute(text(
            f"""SELECT (hashtextextended({key}, 0) & {buckets - 1})::int AS b, count(*),
                       bit_xor(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint)
                  FROM {table} t WHERE {_in_zones(zones)} GROUP BY 1"""
        )).all()
    return {int(r[0]): (int(r[1]), int(r[2])) for r in rows}


def row_hashes(engine: Engine, table: str, buckets: int, wanted: list[int],
               zones: list[str] | None = None) -> dict[str, str]:
    """Key -> row hash for the rows in the ``wanted`` buckets (the drill-down)."""
    with engine.connect() as conn:
        conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        key = _key_expr(primary_key(conn, table))
        rows = conn.execute(text(
            f"""SELECT {key}, md5(t::text) FROM {table} t
                 WHERE (hashtextextended({key}, 0) & {buckets - 1})::int = ANY(:w) AND {_in_zones(zones)}"""
        ), {"w": wanted}).all()
    return {str(r[0]): str(r[1]) for r in rows}


def rows_outside(engine: Engine, table: str, allowed: list[str]) -> dict[str, int]:
    """zone -> rows of a payload table held here whose zone is neither '' nor in ``allowed``
    (a residency breach: PostgreSQL should never have sent them)."""
    with engine.connect() as conn:
        return {str(r[0]): int(r[1]) for r in conn.execute(text(
            f"SELECT zone, count(*) FROM {table} WHERE zone <> ALL(:a) GROUP BY zone"), {"a": ["", *allowed]}).all()}
