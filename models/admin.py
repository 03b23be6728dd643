"""Cluster-level statements run with a superuser: roles, the database, settings.

Used by the dev mesh to bootstrap a fresh cluster; production DBAs run the
same statements (docs/explanation/security.md).
"""

from __future__ import annotations

from sqlalchemy import Engine, text

LINK_CONNECTION_LIMIT = 2
# Every SQL function that moves, creates, drops, copies or consumes a slot.
SLOT_FUNCTIONS = (
    "pg_create_logical_replication_slot", "pg_create_physical_replication_slot", "pg_drop_replication_slot",
    "pg_replication_slot_advance", "pg_copy_logical_replication_slot", "pg_copy_physical_replication_slot",
    "pg_logical_slot_get_changes", "pg_logical_slot_peek_changes", "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_binary_changes",
)


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
    link_roles: dict[str, str] | None = None,
) -> None:
    """Create (or update) the app role, the operator's replication role (``region add`` only),
    one replication role per link that subscribes to this region (``link_roles``: role ->
    password) and the database. Idempotent."""
    roles = [(app_role, "LOGIN", app_password), (replication_role, "LOGIN REPLICATION", replication_password)]
    # A link role streams one subscription: one walsender, plus one while a restarted
    # worker's old connection is still being torn down.
    roles += [(role, f"LOGIN REPLICATION CONNECTION LIMIT {LINK_CONNECTION_LIMIT}", pw)
              for role, pw in (link_roles or {}).items()]
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for role, extra, password in roles:
            exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
            verb = "ALTER" if exists else "CREATE"
            # Role DDL takes no bind parameters: the password is quoted as a literal.
            conn.execute(text(f'{verb} ROLE "{role}" {extra} PASSWORD {_quote_literal(password)}'))
        conn.execute(text(f'GRANT pg_create_subscription TO "{app_role}"'))
        # A failed statement of the app role (CREATE SUBSCRIPTION carries a password) is not
        # copied into the server log as a STATEMENT: line.
        conn.execute(text(f'ALTER ROLE "{app_role}" SET log_min_error_statement = panic'))
    ensure_database(admin, database=database, app_role=app_role, region=region)


def ensure_database(admin: Engine, *, database: str, app_role: str, region: str) -> bool:
    """Create the region's database owned by the app role if it does not exist, and name its
    region in it (``regionmesh.region``, which rm_stamp writes on every local row). ``admin``:
    a superuser connected to another database of the cluster. Returns whether it was created."""
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        has_db = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).scalar()
        if not has_db:
            conn.execute(text(f'CREATE DATABASE "{database}" OWNER "{app_role}"'))
        conn.execute(text(f'ALTER DATABASE "{database}" SET regionmesh.region = {_quote_literal(region)}'))
    return not has_db


def grant_in_database(db_admin: Engine, *, app_role: str) -> None:
    """Grants that live inside the regionmesh database (run connected to it as a superuser)."""
    with db_admin.begin() as conn:
        # Adding a region reads how far this region applied each peer (replication/join.py).
        conn.execute(text(f'GRANT EXECUTE ON FUNCTION pg_replication_origin_progress(text, boolean) TO "{app_role}"'))
        # 'replication setup' compares each subscription's actual connection with the mesh file's.
        conn.execute(text(f'GRANT SELECT (subconninfo) ON pg_subscription TO "{app_role}"'))


def link_role(subscriber: str, publisher: str) -> str:
    """The role ``subscriber``'s subscription uses on ``publisher``: ``rm_link_<sub>_from_<pub>``
    ('-' becomes '_'; at most 62 bytes for 24-character region names)."""
    return f"rm_link_{subscriber}_from_{publisher}".replace("-", "_")


def lock_slot_functions(db_admin: Engine, *, allowed: tuple[str, ...] = ()) -> list[str]:
    """REVOKE EXECUTE from PUBLIC on every SQL function that creates, drops, copies, advances
    or consumes a replication slot, in the database ``db_admin`` is connected to (function
    privileges are per database: run it in each). Superusers keep them; ``allowed`` roles get
    them back explicitly. Returns the functions' signatures."""
    with db_admin.begin() as conn:
        signatures = list(conn.execute(text(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace "
            "AND p.proname = ANY(:names) ORDER BY 1"), {"names": list(SLOT_FUNCTIONS)}).scalars())
        for sig in signatures:
            conn.execute(text(f"REVOKE EXECUTE ON FUNCTION {sig} FROM PUBLIC"))
            for role in allowed:
                conn.execute(text(f'GRANT EXECUTE ON FUNCTION {sig} TO "{role}"'))
    return signatures


def seal_subscription(db_admin: Engine, name: str, conninfo: str) -> None:
    """As a superuser, point a subscription at ``conninfo`` without a password (a ``passfile`` the
    server user reads) so the catalog holds none.

    PostgreSQL 16 lets a non-superuser-owned subscription connect without ``password=`` in its
    conninfo only with ``password_required = false``, and then only a superuser may alter it:
    a sealed subscription must be unsealed (``unseal_subscription``) before its owner changes it.
    The publisher still demands the password (scram), read from the passfile."""
    with db_admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER SUBSCRIPTION {name} SET (password_required = false)"))
        conn.execute(text(f"ALTER SUBSCRIPTION {name} CONNECTION {_quote_literal(conninfo)}"))


def unseal_subscription(db_admin: Engine, name: str, conninfo: str) -> bool:
    """Undo ``seal_subscription`` with the owner's ``conninfo`` (password included) so its owner
    can alter it again. Returns False when the subscription does not exist or is not sealed."""
    with db_admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        sealed = conn.execute(text("SELECT NOT subpasswordrequired FROM pg_subscription WHERE subname = :n"),
                              {"n": name}).scalar()
        if not sealed:
            return False
        conn.execute(text(f"ALTER SUBSCRIPTION {name} CONNECTION {_quote_literal(conninfo)}"))
        conn.execute(text(f"ALTER SUBSCRIPTION {name} SET (password_required = true)"))
    return True


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
