"""The engine's SQL: the current definition of every function and trigger, one file per concern.

The files ship as package data in ``regionmesh/models/sql/`` and are read with
``importlib.resources``, never through paths of the source tree. Each statement
is ``CREATE OR REPLACE`` (or a call of an idempotent generator), so applying a
file again changes nothing. Tables are not here: the models (``tables.py``)
define them and the migrations create them.

==============  ===============================================================
stamp.sql       ``rm_stamp()``: region and ``updated_at`` of every local write
lease.sql       ``rm_may_work()`` (lease and fence), the placement version and
                its locks
engine.sql      the run/step/task state machine (create, complete, fail, cancel,
                retry)
claims.sql      ``rm_claim_task`` (fence, ownership, epoch) and
                ``rm_complete_and_claim``
conflicts.sql   ``rm_install_conflict_triggers(table)``, the generator of the
                replica-side conflict triggers
triggers.sql    the stamp and conflict triggers of every replicated table
deletes.sql     ``rm_install_delete_rules(table)``: tombstones, the replica delete
                rule, refused live deletes and TRUNCATE on every replicated
                table (0010, 0016)
residency.sql   the triggers of the zone and erasure registry tables (0012)
payload.sql     zone stamps of payload rows and run_summaries, the metadata of
                zoned runs that every region holds (0013)
history.sql     the triggers of tenant_registry_history (0014)
watch.sql       ``rm_watch_beat``: heartbeat jumps a subscriber received, the
                sign of a slot moved by someone else (0015)
submissions.sql the triggers of duplicate_submissions (0019)
zones.sql       the triggers of zones, the replicated zone membership (0023)
time.sql        schedules, schedule ticks and signals (their zone stamps and
                triggers) and ``rm_park_task``, a waiting step's park (0026)
console.sql     the triggers of console_actions, the console's audit trail (0025)
fairness.sql    fair dispatch (issue 22): the triggers of tenant_shares, the fair
                queue kept from step_tasks, ``rm_fair_take`` and ``rm_fair_charge``
==============  ===============================================================

How migrations use these files. They are the current view; migrations do not
apply them. Revisions 0002-0007 created functions from SQL literals of their own,
and 0008-0017 apply these files by name, bound by ``migrations/env.py`` to the
files as of 0017 (``migrations/sql/0017_view``), so they keep meaning what they
meant. From 0018 on a revision runs its own immutable
``migrations/sql/NNNN_<name>.sql`` (exactly what it changes) and its downgrade
finds the earlier text by revision (``regionmesh.migrations.history``).
``tests/migration`` proves that every revision from zero gives exactly this
view; ``docs/howto/migrations.md`` has the procedure.
"""

from __future__ import annotations

from importlib.resources import files

from sqlalchemy import Connection

# In dependency order: triggers.sql attaches functions the files before it define.
FILES: tuple[str, ...] = ("stamp.sql", "lease.sql", "engine.sql", "claims.sql", "conflicts.sql", "triggers.sql",
                         "deletes.sql", "residency.sql", "payload.sql", "history.sql", "watch.sql", "submissions.sql",
                         "zones.sql", "console.sql", "time.sql", "fairness.sql")


def load(name: str) -> str:
    """The text of one SQL file.

    Raises ValueError for a name that is not in ``FILES``.
    """
    if name not in FILES:
        raise ValueError(f"unknown SQL file {name!r}; the engine's SQL files are {', '.join(FILES)}")
    return (files("regionmesh.models") / "sql" / name).read_text(encoding="utf-8")


def apply(conn: Connection, *names: str) -> None:
    """Execute the named files, in the order given, on ``conn`` (in its transaction).

    The text goes to the driver as is: no bind parameters are parsed and ``%``
    needs no escaping (``format()`` in conflicts.sql uses ``%1$I``).
    Raises ValueError for an unknown name, and the driver's error if a statement fails.
    """
    for name in names:
        conn.exec_driver_sql(load(name), execution_options={"no_parameters": True})


def run_text(conn: Connection, sql: str) -> None:
    """Execute SQL text frozen in a migration (a file's text as of that revision), like :func:`apply`."""
    conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
