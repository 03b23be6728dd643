"""The fault injector's own SQL against a region's database (the campaign trusts none of the product's
queries to aim a fault): who holds the lease keeper's advisory lock, which OS process that session
belongs to, ending a session, and holding a row lock in an open transaction.

The keeper's lock is ``pg_try_advisory_lock(hashtext('regionmesh.lease:<region>'))`` (the name is
``workers.lease_keeper.LOCK_NAME``); ``pg_locks`` shows a one-bigint key as classid (its high 32
bits) and objid (its low 32 bits), objsubid 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
from sqlalchemy import Connection, Engine, text

from regionmesh.workers.lease_keeper import LOCK_NAME

_HOLDER = """SELECT l.pid, a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.classid::bigint = ((hashtext(:lock)::bigint >> 32) & 4294967295)
                AND l.objid::bigint = (hashtext(:lock)::bigint & 4294967295)"""

# Rows a slow commit may lock, by mode: a running task (its completion waits), a queued task of a
# run this region owns (its claim waits), a running run this region owns (the completion that
# finishes it waits). SKIP LOCKED: never wait behind the product ourselves.
ROW_LOCKS = {
    "completion": """SELECT id::text FROM step_tasks WHERE status = 'running' AND executed_region = :r
                      ORDER BY started_at DESC LIMIT 1 FOR UPDATE SKIP LOCKED""",
    "claim": """SELECT t.id::text FROM step_tasks t JOIN workflow_runs r ON r.id = t.run_id
                 WHERE t.status = 'queued' AND r.status = 'running' AND r.owner_region = :r AND t.epoch = r.epoch
                 ORDER BY t.queued_at NULLS LAST LIMIT 1 FOR UPDATE OF t SKIP LOCKED""",
    "run": """SELECT id::text FROM workflow_runs WHERE status = 'running' AND owner_region = :r
               ORDER BY created_at DESC LIMIT 1 FOR UPDATE SKIP LOCKED""",
}
ROW_TABLES = {"completion": "step_tasks", "claim": "step_tasks", "run": "workflow_runs"}


@dataclass(frozen=True)
class Session:
    """A database session: its backend's pid and the OS process on this host that opened it (None:
    not one of the candidates asked about, or already gone)."""

    backend: int
    client_port: int | None
    process: int | None


def lock_name(region: str) -> str:
    return f"{LOCK_NAME}:{region}"


def process_of(client_port: int | None, candidates: list[int]) -> int | None:
    """Which of ``candidates`` (OS pids) holds a TCP connection from local port ``client_port``."""
    if client_port is None or client_port < 0:
        return None
    for pid in candidates:
        try:
            if any(c.laddr and c.laddr.port == client_port for c in psutil.Process(pid).net_connections("tcp")):
                return pid
        except psutil.Error:  # gone, or not ours to look at
            continue
    return None


def keeper_holder(engine: Engine, region: str, candidates: list[int]) -> Session | None:
    """The session holding ``region``'s lease keeper lock now, or None (nobody holds it)."""
    with engine.connect() as conn:
        row = conn.execute(text(_HOLDER), {"lock": lock_name(region)}).first()
    if row is None:
        return None
    port = None if row[1] is None else int(row[1])
    return Session(int(row[0]), port, process_of(port, candidates))


def sessions_of(engine: Engine, pid: int) -> list[int]:
    """The backends whose client is OS process ``pid`` (matched by its TCP connections' ports)."""
    try:
        ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.laddr}
    except psutil.Error:
        return []
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL")).all()
    return [int(b) for b, port in rows if port in ports]


def terminate(engine: Engine, backend: int) -> bool:
    """``pg_terminate_backend``: the session ends, and every advisory lock it held is free."""
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend}).scalar())


def lock_row(conn: Connection, mode: str, region: str) -> str | None:
    """In ``conn``'s open transaction, lock one row of ``mode`` (``ROW_LOCKS``) in ``region``; its id,
    or None when there is no such row free now. The lock lasts until the transaction ends."""
    return conn.execute(text(ROW_LOCKS[mode]), {"r": region}).scalar()


def my_backend(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def waiters(engine: Engine, backend: int) -> dict[int, str]:
    """Sessions waiting for a lock ``backend`` holds: backend pid -> the start of their query."""
    with engine.connect() as conn:
        rows = conn.execute(text("""SELECT pid, left(regexp_replace(query, '\\s+', ' ', 'g'), 80)
                                      FROM pg_stat_activity WHERE :b = ANY(pg_blocking_pids(pid))"""),
                            {"b": backend}).all()
    return {int(p): str(q) for p, q in rows}


def running_steps(engine: Engine, region: str) -> list[tuple[str, float]]:
    """(worker id ``host:pid``, the step's timeout) of every task running in ``region`` now."""
    with engine.connect() as conn:
        rows = conn.execute(text("""SELECT t.worker, s.timeout_s FROM step_tasks t JOIN workflow_steps s ON s.id = t.step_id
                                     WHERE t.status = 'running' AND t.executed_region = :r AND t.worker IS NOT NULL"""),
                            {"r": region}).all()
    return [(str(w), float(timeout)) for w, timeout in rows]


def grant_state(engine: Engine, holder: str, grantor: str) -> str | None:
    """What ``grantor`` last wrote about ``holder`` in its ``lease_grants`` row, as ``engine``'s
    region holds it (granting, withheld, expired; None: no row)."""
    with engine.connect() as conn:
        state = conn.execute(text("SELECT state FROM lease_grants WHERE holder = :h AND grantor = :g"),
                             {"h": holder, "g": grantor}).scalar()
    return None if state is None else str(state)


def running_first_tasks(engine: Engine, run_ids: list[str]) -> list[str]:
    """Of ``run_ids``, those whose first step ``a`` has a task running in this region's copy."""
    with engine.connect() as conn:
        return [str(r) for r in conn.execute(text(
            "SELECT DISTINCT run_id::text FROM step_tasks WHERE run_id = ANY(CAST(:ids AS uuid[])) "
            "AND step_key = 'a' AND status = 'running'"), {"ids": run_ids}).scalars()]
