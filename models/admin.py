"""Cluster-level statements run with a superuser: roles, the database, settings.

Used by the dev mesh to bootstrap a fresh cluster; production DBAs run the
same statements (README, "Roles").
"""

from __future__ import annotations

from sqlalchemy import Engine, text


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def bootstrap_cluster(
    admin: Engine,
    *,
    database: str,
    app_role: str,
    app_password: str,
    replication_role: str,
    replication_password: str,
    region: str,
) -> None:
    """Create (or update) the app role, the replication role and the database. Idempotent."""
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for role, extra, password in (
            (app_role, "LOGIN", app_password),
            (replication_role, "LOGIN REPLICATION", replication_password),
        ):
            exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
            verb = "ALTER" if exists else "CREATE"
            # Role DDL takes no bind parameters: the password is quoted as a literal.
            conn.execute(text(f'{verb} ROLE "{role}" {extra} PASSWORD {_quote_literal(password)}'))
        conn.execute(text(f'GRANT pg_create_subscription TO "{app_role}"'))
        has_db = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).scalar()
        if not has_db:
            conn.execute(text(f'CREATE DATABASE "{database}" OWNER "{app_role}"'))
        conn.execute(text(f'ALTER DATABASE "{database}" SET regionmesh.region = {_quote_literal(region)}'))


def grant_in_database(db_admin: Engine, *, app_role: str) -> None:
    """Grants that live inside the regionmesh database (run connected to it as a superuser)."""
    with db_admin.begin() as conn:
        # Adding a region reads how far this region applied each peer (replication/join.py).
        conn.execute(text(f'GRANT EXECUTE ON FUNCTION pg_replication_origin_progress(text, boolean) TO "{app_role}"'))
        # 'replication setup' compares each subscription's actual connection with the mesh file's.
        conn.execute(text(f'GRANT SELECT (subconninfo) ON pg_subscription TO "{app_role}"'))


def server_facts(engine: Engine) -> dict[str, str]:
    """Version and the settings the mesh depends on."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('server_version_num', 'wal_level', 'track_commit_timestamp', "
                "'max_replication_slots', 'max_wal_senders', 'max_slot_wal_keep_size')"
            )
        ).all()
        facts = {name: setting for name, setting in rows}
        facts["region_setting"] = conn.execute(text("SELECT current_setting('regionmesh.region', true)")).scalar() or ""
    return facts
