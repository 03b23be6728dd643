"""Every statement about a region's subscriptions (its inbound links): create, repair, repoint,
enable, drop, and the publications each one takes. The connection string carries a password:
a failed statement's error never repeats it (:class:`SubscriptionError`), and setup compares
connections by a fingerprint where this role may not read them."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from regionmesh.errors import RegionmeshError
from regionmesh.models.quoting import literal


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
                    f"CREATE SUBSCRIPTION {name} CONNECTION {literal(conninfo)} PUBLICATION {publication} "
                    f"WITH (copy_data = false, slot_name = '{name}', {_OPTION_SQL})"
                ))
            conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {literal(_fingerprint(conninfo))}"))
            return "created"
        if facts["conninfo"] is not None:
            conn_differs = facts["conninfo"] != conninfo
        else:  # this role cannot read subconninfo: trust setup's own fingerprint
            conn_differs = facts["fingerprint"] != _fingerprint(conninfo)
        if conn_differs:
            with _password_kept_out(conninfo):
                conn.execute(text(f"ALTER SUBSCRIPTION {name} CONNECTION {literal(conninfo)}"))
            changes.append("connection")
        if facts["fingerprint"] != _fingerprint(conninfo):
            conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {literal(_fingerprint(conninfo))}"))
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


def create_subscription_on_slot(engine: Engine, name: str, conninfo: str, publication: str) -> None:
    """Subscribe with an existing slot (create_slot = false), origin = none, no copy."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn, _password_kept_out(conninfo):
        conn.execute(text(
            f"CREATE SUBSCRIPTION {name} CONNECTION {literal(conninfo)} PUBLICATION {publication} "
            f"WITH (origin = none, copy_data = false, create_slot = false, slot_name = '{name}', "
            "streaming = on, binary = false)"
        ))
        conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {literal(_fingerprint(conninfo))}"))


def set_subscription_connection(engine: Engine, name: str, conninfo: str) -> None:
    """Point one link elsewhere (a proxy, a new address); ``setup`` restores the mesh file's."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn, _password_kept_out(conninfo):
        conn.execute(text(f"ALTER SUBSCRIPTION {name} CONNECTION {literal(conninfo)}"))
        conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {literal(_fingerprint(conninfo))}"))


def drop_subscription(engine: Engine, name: str) -> bool:
    """Drop one subscription without touching its slot (the publisher may be unreachable or the
    slot lost; :func:`regionmesh.models.slot_copy.drop_slot_if_exists` removes it). Returns whether it existed."""
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
