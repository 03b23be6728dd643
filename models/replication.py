"""Every statement about publications, subscriptions, slots, lag and row hashes."""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extras
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from regionmesh.errors import RegionmeshError
from regionmesh.models.tables import REPLICATED_TABLES, ZONED_TABLES


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def replicated_tables_in_catalog(conn: Connection) -> list[str]:
    """The tables carrying the replica conflict triggers (what marks a table replicated), by name."""
    return list(conn.execute(text(
        """SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE t.tgname = 'rm_conflict_ins' AND NOT t.tgisinternal ORDER BY c.relname"""
    )).scalars())


def regenerate_replica_triggers(conn: Connection) -> list[str]:
    """Regenerate every replicated table's replica triggers from its current columns, in the
    caller's transaction: a migration that changes a replicated table calls this after its DDL,
    so the apply worker never runs a function with a stale column list. Returns the tables."""
    tables = replicated_tables_in_catalog(conn)
    has_delete_rules = conn.execute(text("SELECT to_regprocedure('rm_install_delete_rules(regclass)') IS NOT NULL")).scalar()
    for table in tables:
        conn.execute(text("SELECT rm_install_conflict_triggers(CAST(:t AS regclass))"), {"t": table})
        if has_delete_rules:
            conn.execute(text("SELECT rm_install_delete_rules(CAST(:t AS regclass))"), {"t": table})
    return tables


def payload_zoned(engine: Engine) -> bool:
    """Whether this database's payload tables carry ``zone`` (0013): only then are they published
    per destination; before it, ``rm_pub`` carries them like any other table."""
    with engine.connect() as conn:
        return bool(conn.execute(text(
            """SELECT count(*) = :n FROM information_schema.columns
                WHERE table_schema = current_schema() AND column_name = 'zone' AND table_name = ANY(:t)"""
        ), {"n": len(ZONED_TABLES), "t": list(ZONED_TABLES)}).scalar())


def ensure_publication(engine: Engine, name: str, replication_role: str, *, with_payload: bool = False) -> list[str]:
    """One publication of the replicated tables only (never FOR ALL TABLES), no TRUNCATE;
    the replication role may read exactly those tables. The replicated tables are the ones
    with the replica conflict triggers (``REPLICATED_TABLES`` on a database that has none yet).
    The payload tables (``ZONED_TABLES``) go per destination (:func:`ensure_zoned_publication`)
    and are left out, unless ``with_payload``: a subscriber that does not subscribe to its
    per-destination publication yet still needs them here (the switch, replication/publications.py).
    Returns the tables added to an existing publication."""
    with engine.begin() as conn:
        wanted = [t for t in replicated_tables_in_catalog(conn) or list(REPLICATED_TABLES)
                  if with_payload or t not in ZONED_TABLES]
        tables = ", ".join(f'"{t}"' for t in wanted)
        exists = conn.execute(text("SELECT 1 FROM pg_publication WHERE pubname = :n"), {"n": name}).scalar()
        added: list[str] = []
        if exists:
            had = set(conn.execute(text("SELECT tablename FROM pg_publication_tables WHERE pubname = :n"),
                                   {"n": name}).scalars())
            added = [t for t in wanted if t not in had]
            conn.execute(text(f"ALTER PUBLICATION {name} SET TABLE {tables}"))
            conn.execute(text(f"ALTER PUBLICATION {name} SET (publish = 'insert, update, delete')"))
        else:
            conn.execute(text(f"CREATE PUBLICATION {name} FOR TABLE {tables} WITH (publish = 'insert, update, delete')"))
        role_exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": replication_role}).scalar()
        if role_exists:
            conn.execute(text(f'GRANT SELECT ON {tables} TO "{replication_role}"'))
    return added


def zone_filter(zones: list[str]) -> str:
    """The row filter of a destination's payload publication: unzoned rows, and rows of its zones."""
    return "(zone IN (" + ", ".join(_literal(z) for z in ["", *sorted(zones)]) + "))"


def ensure_zoned_publication(engine: Engine, name: str, zones: list[str], replication_role: str) -> None:
    """The payload tables (``ZONED_TABLES``) for one destination, filtered on their ``zone`` (a
    replica-identity column, so updates and deletes are filtered too): PostgreSQL never sends a
    row of another zone to that destination. Recreated with the current filter every time."""
    with engine.begin() as conn:
        where = zone_filter(zones)
        tables = ", ".join(f'"{t}" WHERE {where}' for t in ZONED_TABLES)
        exists = conn.execute(text("SELECT 1 FROM pg_publication WHERE pubname = :n"), {"n": name}).scalar()
        if exists:
            conn.execute(text(f"ALTER PUBLICATION {name} SET TABLE {tables}"))
        else:
            conn.execute(text(f"CREATE PUBLICATION {name} FOR TABLE {tables} WITH (publish = 'insert, update, delete')"))
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": replication_role}).scalar():
            conn.execute(text(f'GRANT SELECT ON {", ".join(ZONED_TABLES)} TO "{replication_role}"'))


def publication_filters(engine: Engine, name: str) -> dict[str, str | None]:
    """table -> row filter of publication ``name`` (None: unfiltered)."""
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text(
            "SELECT tablename::text, rowfilter FROM pg_publication_tables WHERE pubname = :n"), {"n": name}).all()}


def publication_tables(engine: Engine, name: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(
            text("SELECT tablename FROM pg_publication_tables WHERE pubname = :n ORDER BY tablename"), {"n": name}
        ).scalars())


def publication_flags(engine: Engine, name: str) -> dict[str, bool]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = :n"),
            {"n": name},
        ).mappings().first()
    return dict(row) if row else {}


class SubscriptionError(RegionmeshError):
    """A subscription statement failed; the message never carries the connection's password."""


@contextmanager
def _password_kept_out(conninfo: str) -> Iterator[None]:
    """The driver's error text repeats the statement, password included: replace it, and do not
    chain the original (a traceback would print it)."""
    try:
        yield
    except DBAPIError as exc:
        message = str(exc.orig).strip() if exc.orig is not None else type(exc).__name__
        secret = re.search(r"password='((?:[^'\\]|\\.)*)'", conninfo)
        if secret and secret.group(1):
            for form in (secret.group(1), re.sub(r"\\(.)", r"\1", secret.group(1))):
                message = message.replace(form, "***")
        raise SubscriptionError(f"subscription statement failed: {message}") from None


def _fingerprint(conninfo: str) -> str:
    return "regionmesh conninfo sha256:" + hashlib.sha256(conninfo.encode()).hexdigest()[:16]


# What every subscription of the mesh has, as pg_subscription shows it (substream 't' is streaming = on).
SUBSCRIPTION_OPTIONS = {"suborigin": "none", "substream": "t", "subbinary": False, "subdisableonerr": False}
_OPTION_SQL = "origin = none, streaming = on, binary = false, disable_on_error = false"


def subscription_facts(engine: Engine, name: str) -> dict[str, Any] | None:
    """What the catalog says about one subscription: enabled, publications, options, slot, the
    tables it applies, and its connection string (None where this role may not read
    ``subconninfo``; then ``fingerprint`` is the comment setup left). None: no such subscription."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT s.oid, s.subenabled, s.subpublications, s.suborigin, s.substream::text AS substream,
                      s.subbinary, s.subdisableonerr, s.subslotname::text AS subslotname,
                      obj_description(s.oid, 'pg_subscription') AS fingerprint,
                      ARRAY(SELECT c.relname::text FROM pg_subscription_rel r JOIN pg_class c ON c.oid = r.srrelid
                             WHERE r.srsubid = s.oid ORDER BY 1) AS tables
                 FROM pg_subscription s
                WHERE s.subname = :n AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"""
        ), {"n": name}).mappings().first()
        if row is None:
            return None
        facts = dict(row)
        readable = conn.execute(text("SELECT has_column_privilege('pg_subscription', 'subconninfo', 'SELECT')")).scalar()
        facts["conninfo"] = conn.execute(
            text("SELECT subconninfo FROM pg_subscription WHERE oid = :o"), {"o": facts["oid"]}
        ).scalar() if readable else None
    return facts


def ensure_subscription(engine: Engine, name: str, conninfo: str, publication: str,
                        published_tables: list[str] | None = None) -> str:
    """Make one subscription what the mesh file says: create it (origin = none, copy_data =
    false), or compare its connection, publication, options, slot and enabled state with the
    wanted ones and repair each difference; tables the publisher publishes that it does not
    apply yet are added (REFRESH PUBLICATION, copy_data = false). Runs outside a transaction.

    Returns 'created', 'unchanged' or 'updated: <what changed>'.
    """
    facts = subscription_facts(engine, name)
    changes: list[str] = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if facts is None:
            with _password_kept_out(conninfo):
                conn.execute(text(
                    f"CREATE SUBSCRIPTION {name} CONNECTION {_literal(conninfo)} PUBLICATION {publication} "
                    f"WITH (copy_data = false, slot_name = '{name}', {_OPTION_SQL})"
                ))
            conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {_literal(_fingerprint(conninfo))}"))
            return "created"
        if facts["conninfo"] is not None:
            conn_differs = facts["conninfo"] != conninfo
        else:  # this role cannot read subconninfo: trust setup's own fingerprint
            conn_differs = facts["fingerprint"] != _fingerprint(conninfo)
        if conn_differs:
            with _password_kept_out(conninfo):
                conn.execute(text(f"ALTER SUBSCRIPTION {name} CONNECTION {_literal(conninfo)}"))
            changes.append("connection")
        if facts["fingerprint"] != _fingerprint(conninfo):
            conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {_literal(_fingerprint(conninfo))}"))
        if list(facts["subpublications"]) != [p.strip() for p in publication.split(",")]:
            conn.execute(text(f"ALTER SUBSCRIPTION {name} SET PUBLICATION {publication} WITH (refresh = false)"))
            changes.append(f"publication {','.join(facts['subpublications'])} -> {publication}")
        wrong = [k for k, v in SUBSCRIPTION_OPTIONS.items() if facts[k] != v]
        if wrong:
            conn.execute(text(f"ALTER SUBSCRIPTION {name} SET ({_OPTION_SQL})"))
            changes.append("options " + ", ".join(f"{k[3:]}={facts[k]}" for k in wrong))
        if facts["subslotname"] != name:
            if facts["subenabled"]:
                conn.execute(text(f"ALTER SUBSCRIPTION {name} DISABLE"))
            conn.execute(text(f"ALTER SUBSCRIPTION {name} SET (slot_name = '{name}')"))
            changes.append(f"slot {facts['subslotname']} -> {name}")
            facts["subenabled"] = False
        if not facts["subenabled"]:
            conn.execute(text(f"ALTER SUBSCRIPTION {name} ENABLE"))
            changes.append("enabled")
        missing = sorted(set(published_tables or []) - set(facts["tables"]))
        if missing or (changes and changes[-1].startswith("publication")):
            conn.execute(text(f"ALTER SUBSCRIPTION {name} REFRESH PUBLICATION WITH (copy_data = false)"))
            changes.append("tables + " + ", ".join(missing) if missing else "tables refreshed")
    return "updated: " + "; ".join(changes) if changes else "unchanged"


def drop_subscription(engine: Engine, name: str) -> bool:
    """Drop one subscription without touching its slot (the publisher may be unreachable or the
    slot lost; :func:`drop_slot` removes it). Returns whether it existed."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_subscription WHERE subname = :n"), {"n": name}).scalar()
        if not exists:
            return False
        conn.execute(text(f"ALTER SUBSCRIPTION {name} DISABLE"))
        conn.execute(text(f"ALTER SUBSCRIPTION {name} SET (slot_name = NONE)"))
        conn.execute(text(f"DROP SUBSCRIPTION {name}"))
    return True


def subscription_publication_names(engine: Engine, name: str) -> list[str] | None:
    """The publications subscription ``name`` subscribes to (None: no such subscription)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT subpublications FROM pg_subscription
                WHERE subname = :n AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"""
        ), {"n": name}).first()
    return None if row is None else list(row[0])


def set_subscription_publications(engine: Engine, name: str, publications: str) -> None:
    """Subscribe ``name`` to ``publications`` (a comma-separated list) from its confirmed position
    on; the tables it applies do not change (refresh = false)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER SUBSCRIPTION {name} SET PUBLICATION {publications} WITH (refresh = false)"))


def refresh_subscription(engine: Engine, name: str) -> None:
    """Start applying tables added to the publisher's publication (no initial copy)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER SUBSCRIPTION {name} REFRESH PUBLICATION WITH (copy_data = false)"))


def wipe_replicated_tables(engine: Engine) -> list[str]:
    """Empty this region's copy of every replicated table, locally: TRUNCATE does not replicate,
    and its refusal is lifted inside this one transaction only (the ALTERs lock each table, so no
    other session sees it lifted). Only for rebuilding a region (``region resync``). Returns the tables."""
    with engine.begin() as conn:
        tables = replicated_tables_in_catalog(conn)
        if not tables:  # a database not yet migrated holds none
            return []
        for t in tables:
            conn.execute(text(f'ALTER TABLE "{t}" DISABLE TRIGGER rm_no_truncate'))
        conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)))
        for t in tables:
            conn.execute(text(f'ALTER TABLE "{t}" ENABLE ALWAYS TRIGGER rm_no_truncate'))
    return tables


def set_subscription_connection(engine: Engine, name: str, conninfo: str) -> None:
    """Point one link elsewhere (a proxy, a new address); ``setup`` restores the mesh file's."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn, _password_kept_out(conninfo):
        conn.execute(text(f"ALTER SUBSCRIPTION {name} CONNECTION {_literal(conninfo)}"))
        conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {_literal(_fingerprint(conninfo))}"))


def subscriptions(engine: Engine) -> list[dict[str, Any]]:
    """This region's subscriptions: enabled, worker alive, last message times, apply errors."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT s.subname, s.subenabled, s.suborigin,
                      w.pid, w.received_lsn::text AS received_lsn, w.latest_end_lsn::text AS latest_end_lsn,
                      w.last_msg_receipt_time, w.latest_end_time,
                      coalesce(st.apply_error_count, 0) AS apply_error_count,
                      coalesce(st.sync_error_count, 0) AS sync_error_count
                 FROM pg_subscription s
                 LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
                 LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
                WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                ORDER BY s.subname"""
        )).mappings().all()
    return [dict(r) for r in rows]


def observe_link_errors(engine: Engine) -> dict[str, float | None]:
    """Record each subscription's apply error count; returns seconds since it last grew
    (None: not since tracking began). A first observation of a non-zero count counts as growth."""
    with engine.begin() as conn:
        rows = conn.execute(text(
            """WITH cur AS (
                 SELECT s.subname, coalesce(st.apply_error_count, 0) AS n
                   FROM pg_subscription s LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
                  WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))
               INSERT INTO replication_link_stats AS l (subscription, error_count, observed_at, increased_at)
               SELECT subname, n, clock_timestamp(), CASE WHEN n > 0 THEN clock_timestamp() END FROM cur
               ON CONFLICT (subscription) DO UPDATE
                  SET error_count = EXCLUDED.error_count, observed_at = EXCLUDED.observed_at,
                      increased_at = CASE WHEN EXCLUDED.error_count > l.error_count THEN EXCLUDED.observed_at
                                          ELSE l.increased_at END
               RETURNING subscription, extract(epoch FROM clock_timestamp() - increased_at)"""
        )).all()
    return {r[0]: None if r[1] is None else float(r[1]) for r in rows}


def slots(engine: Engine) -> list[dict[str, Any]]:
    """Slots on this publisher: bytes not yet confirmed by the subscriber, retained WAL, wal_status."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT slot_name, active, wal_status,
                      pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes,
                      pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes,
                      confirmed_flush_lsn::text AS confirmed_flush_lsn
                 FROM pg_replication_slots WHERE slot_type = 'logical' AND slot_name LIKE 'rm\\_%'
                ORDER BY slot_name"""
        )).mappings().all()
    return [dict(r) for r in rows]


def current_lsn(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one())


def slot_caught_up(engine: Engine, slot: str, lsn: str) -> bool:
    """Whether ``slot`` on this publisher has confirmed everything up to ``lsn``."""
    with engine.connect() as conn:
        return bool(conn.execute(
            text("SELECT confirmed_flush_lsn >= CAST(:l AS pg_lsn) FROM pg_replication_slots WHERE slot_name = :s"),
            {"l": lsn, "s": slot},
        ).scalar())


def heartbeat_ages(engine: Engine) -> dict[str, float]:
    """Seconds since each region's heartbeat, as this region's copy shows it."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT region, extract(epoch FROM clock_timestamp() - beat_at) FROM heartbeats")).all()
    return {r[0]: float(r[1]) for r in rows}


def skipped_changes(engine: Engine) -> dict[str, dict[str, Any]]:
    """subscription name -> the heartbeat jumps its current subscription received (watch.sql):
    ``gaps``, beats ``skipped``, the last jump (``last_gap_from`` -> ``last_gap_to`` at
    ``last_gap_at``). Only subscriptions with a jump; rows of dropped subscriptions are ignored."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT s.subname, w.publisher, w.gaps, w.skipped, w.last_gap_from, w.last_gap_to, w.last_gap_at
                 FROM replication_watch w JOIN pg_subscription s ON s.oid::bigint = w.subid
                WHERE w.gaps > 0""")).mappings().all()
    return {r["subname"]: dict(r) for r in rows}


def acknowledge_skipped(engine: Engine, subscription: str) -> int:
    """Clear the recorded jumps of ``subscription`` (an operator checked and repaired the link).
    Returns how many were cleared."""
    with engine.begin() as conn:
        return int(conn.execute(text(
            """UPDATE replication_watch w SET gaps = 0, skipped = 0 FROM pg_subscription s
                WHERE s.oid::bigint = w.subid AND s.subname = :n AND w.gaps > 0
            RETURNING w.gaps"""), {"n": subscription}).rowcount)


def conflict_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, count(*) FROM replication_conflicts GROUP BY kind")).all()
    return {r[0]: int(r[1]) for r in rows}


def primary_key(conn: Connection, table: str) -> list[str]:
    return list(conn.execute(text(
        """SELECT a.attname FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary
            ORDER BY array_position(i.indkey::int2[], a.attnum)"""
    ), {"t": table}).scalars())


def _key_expr(pk: list[str]) -> str:
    return " || ',' || ".join(f"{c}::text" for c in pk)


def _in_zones(zones: list[str] | None) -> str:
    """A condition on a payload table's ``zone``: exactly these zones ('' is unzoned); None: all rows."""
    return "true" if zones is None else "t.zone IN (" + ", ".join(_literal(z) for z in sorted(zones)) + ")"


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


# -- adding a region (Zodan): slots first, copy from a seed, advance, subscribe -----------------
def create_slot(peer_conninfo: str, slot: str) -> str:
    """Create a pgoutput slot on a peer (as the replication role). Returns its consistent LSN."""

    with psycopg2.connect(peer_conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        row = cur.fetchone()
    conn.close()
    assert row is not None
    return str(row[0])


def advance_slot(peer_conninfo: str, slot: str, lsn: str) -> None:

    with psycopg2.connect(peer_conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn))
    conn.close()


def drop_slot_if_exists(peer_conninfo: str, slot: str, timeout: float = 30) -> bool:
    """Drop a slot on a peer once no walsender uses it (a subscriber just disabled lets go of it
    within a moment). Returns whether it existed. Raises TimeoutError if it stays in use."""
    deadline = time.monotonic() + timeout
    with psycopg2.connect(peer_conninfo) as conn, conn.cursor() as cur:
        while True:
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            conn.commit()
            if row is None:
                existed = False
                break
            if not row[0]:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                existed = True
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot {slot} still in use after {timeout}s")
            time.sleep(0.1)
    conn.close()
    return existed


def has_rows(engine: Engine) -> bool:
    with engine.connect() as conn:
        return any(conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {t})")).scalar() for t in REPLICATED_TABLES)


def origin_progress(engine: Engine, subscription: str) -> str | None:
    """The publisher LSN up to which this region applied ``subscription``'s changes."""
    with engine.connect() as conn:
        return conn.execute(text(
            """SELECT pg_replication_origin_progress('pg_' || s.oid, true)::text
                 FROM pg_subscription s WHERE s.subname = :n"""
        ), {"n": subscription}).scalar()


def lsn_at_least(engine: Engine, a: str | None, b: str) -> bool:
    if a is None:
        return False
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT CAST(:a AS pg_lsn) >= CAST(:b AS pg_lsn)"), {"a": a, "b": b}).scalar())


def set_subscription_enabled(engine: Engine, subscription: str, enabled: bool) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER SUBSCRIPTION {subscription} {'ENABLE' if enabled else 'DISABLE'}"))


def wait_worker_stopped(engine: Engine, subscription: str, timeout: float = 30) -> None:

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            pid = conn.execute(text(
                """SELECT w.pid FROM pg_stat_subscription w JOIN pg_subscription s ON s.oid = w.subid
                    WHERE s.subname = :n AND w.pid IS NOT NULL LIMIT 1"""
            ), {"n": subscription}).scalar()
        if pid is None:
            return
        time.sleep(0.05)
    raise TimeoutError(f"apply worker of {subscription} did not stop within {timeout}s")


def copy_with_new_slot(seed_conninfo: str, seed_app_url: str, slot: str, target_admin_url: str,
                       zones: list[str] | None = None) -> int:
    """Create ``slot`` on the seed exporting its snapshot, copy every replicated table as of
    that snapshot into the target (in replica mode, so rows keep their stamps). ``zones``: the
    payload tables' rows are copied only where their zone is '' or one of these (what the
    target's publications would send it); None copies them all. Returns rows copied."""


    def dsn(url: str) -> str:
        u = make_url(url)
        return (f"host={u.host} port={u.port} dbname={u.database} user={u.username} "
                f"password='{(u.password or '').replace(chr(39), chr(92) + chr(39))}'")

    repl_conn = psycopg2.connect(seed_conninfo, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    copied = 0
    try:
        cur = repl_conn.cursor()
        cur.execute(f"CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export')")
        row = cur.fetchone()
        assert row is not None
        snapshot = row[2]
        src = psycopg2.connect(dsn(seed_app_url))
        dst = psycopg2.connect(dsn(target_admin_url))
        try:
            scur = src.cursor()
            scur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            scur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
            dcur = dst.cursor()
            dcur.execute("SET session_replication_role = replica")
            for table in REPLICATED_TABLES:
                where = f" WHERE {zone_filter(zones)}" if zones is not None and table in ZONED_TABLES else ""
                with tempfile.TemporaryFile() as buf:
                    scur.copy_expert(f"COPY (SELECT * FROM {table}{where}) TO STDOUT", buf)
                    buf.seek(0)
                    dcur.copy_expert(f"COPY {table} FROM STDIN", buf)
                scur.execute(f"SELECT count(*) FROM {table}{where}")
                counted = scur.fetchone()
                copied += int(counted[0]) if counted else 0
            dst.commit()
            src.rollback()
        finally:
            src.close()
            dst.close()
    finally:
        repl_conn.close()
    return copied


def create_subscription_on_slot(engine: Engine, name: str, conninfo: str, publication: str) -> None:
    """Subscribe with an existing slot (create_slot = false), origin = none, no copy."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn, _password_kept_out(conninfo):
        conn.execute(text(
            f"CREATE SUBSCRIPTION {name} CONNECTION {_literal(conninfo)} PUBLICATION {publication} "
            f"WITH (origin = none, copy_data = false, create_slot = false, slot_name = '{name}', "
            "streaming = on, binary = false)"
        ))
        conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {_literal(_fingerprint(conninfo))}"))
