"""The SQL the migrations run, by revision: immutable files, and any definition as of a revision.

``migrations/sql/`` (shipped as package data, read with ``importlib.resources``):

``0017_view/<file>.sql``
    ``models/sql`` as it was at revision 0017 (commit 65f50e1), byte for byte. Revisions
    0008-0017 apply those files *by name* (``schema_sql.apply(bind, "conflicts.sql")``): they were
    written while the current view and their own text were one thing. The migration environment
    binds them to this frozen copy (:func:`bind_legacy_revisions`), so they keep meaning what they
    meant however ``models/sql`` moves on, without being edited.
``NNNN_<name>.sql``
    From 0018 on, exactly what revision NNNN changes, run by its few lines of Python
    (:func:`apply_revision`). ``models/sql`` stays the current view; tests/migration proves that
    every revision from zero gives exactly that view.
``SHA256SUMS``
    The hash of every file above. tests/migration/test_sql_history.py fails when a file differs
    from it, or when a commit modified a file after it was added: these files are never edited.

A downgrade finds the earlier text by revision instead of a pasted copy: :func:`definition`
returns a function's ``CREATE`` statement as of a revision (the newest revision file up to it
that defines the function, else the 0017 view), and :func:`revert_functions` restores or drops
every function a revision defined. docs/howto/migrations.md has the procedure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Connection

# The last revision that applies models/sql files by name; the view it saw is frozen in sql/0017_view.
LEGACY_LAST = "0017"
LEGACY_VIEW = "0017_view"
# schema_sql.FILES as of 0017: the frozen view's files in dependency order.
LEGACY_FILES: tuple[str, ...] = ("stamp.sql", "lease.sql", "engine.sql", "claims.sql", "conflicts.sql", "triggers.sql",
                                 "deletes.sql", "residency.sql", "payload.sql", "history.sql", "watch.sql")
SUMS = "SHA256SUMS"
# The release whose workers must keep working against head during a rolling upgrade (a commit:
# regionmesh has no release tags yet). Move it forward when a release is cut.
PREVIOUS_RELEASE = "65f50e1"
# Versioned names (docs/howto/migrations.md): a function an older release calls is dropped only by a
# revision of a later release, named here as function -> the revision that drops it.
RETIRED: dict[str, str] = {}

_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.sql$")
_CREATE_FUNCTION = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(?:\w+\.)?(\w+)\s*\(", re.IGNORECASE)
_DROP_FUNCTION = re.compile(r"^DROP\s+FUNCTION\s+(?:IF\s+EXISTS\s+)?(.*?)(?:\s+(?:CASCADE|RESTRICT))?$",
                            re.IGNORECASE | re.DOTALL)


def sql_dir() -> Traversable:
    return files("regionmesh.migrations") / "sql"


def revision_files() -> dict[str, str]:
    """Revision -> its SQL file's name, for every revision from 0018 on, oldest first.

    Raises ValueError if a revision has two files."""
    out: dict[str, str] = {}
    for entry in sorted(sql_dir().iterdir(), key=lambda e: e.name):
        match = _REVISION_FILE.match(entry.name)
        if not match:
            continue
        if match.group(1) in out:
            raise ValueError(f"revision {match.group(1)} has two SQL files: {out[match.group(1)]}, {entry.name}")
        out[match.group(1)] = entry.name
    return out


def revision_sql(revision: str) -> str:
    """The text of ``revision``'s SQL file. Raises LookupError if it has none."""
    name = revision_files().get(revision)
    if name is None:
        raise LookupError(f"revision {revision} has no SQL file in migrations/sql (NNNN_<name>.sql)")
    return (sql_dir() / name).read_text(encoding="utf-8")


def run_sql(conn: Connection, sql: str) -> None:
    """Execute SQL text as is (no bind parameters; ``%`` needs no escaping), in ``conn``'s transaction."""
    conn.exec_driver_sql(sql, execution_options={"no_parameters": True})


def apply_revision(conn: Connection, revision: str) -> None:
    """Run ``revision``'s SQL file: what a revision from 0018 on calls in ``upgrade()``."""
    run_sql(conn, revision_sql(revision))


@dataclass(frozen=True)
class FrozenView:
    """``models/sql`` as of revision 0017, with the part of ``schema_sql``'s interface that
    revisions 0008-0017 call (``apply``, ``run_text``, ``load``)."""

    folder: str = LEGACY_VIEW
    FILES: tuple[str, ...] = LEGACY_FILES

    def load(self, name: str) -> str:
        if name not in self.FILES:
            raise ValueError(f"unknown SQL file {name!r} in the view as of {LEGACY_LAST}")
        return (sql_dir() / self.folder / name).read_text(encoding="utf-8")

    def apply(self, conn: Connection, *names: str) -> None:
        for name in names:
            run_sql(conn, self.load(name))

    def run_text(self, conn: Connection, sql: str) -> None:
        run_sql(conn, sql)


LEGACY = FrozenView()


def bind_legacy_revisions(script: ScriptDirectory) -> list[str]:
    """Make the shipped revisions up to 0017 read the SQL files as of 0017 instead of today's view.

    They call ``schema_sql.apply(bind, name)`` through their module's ``schema_sql`` name; this
    points that name at :data:`LEGACY`. Revisions from other folders (tests add some) are left
    alone. Returns the revisions bound."""
    shipped = Path(str(files("regionmesh.migrations") / "versions")).resolve()
    bound = []
    for rev in script.walk_revisions():
        if not (rev.revision.isdigit() and rev.revision <= LEGACY_LAST):
            continue
        if Path(rev.path).resolve().parent != shipped or not hasattr(rev.module, "schema_sql"):
            continue
        vars(rev.module)["schema_sql"] = LEGACY  # the name their upgrade() looks up when it runs
        bound.append(rev.revision)
    return bound


def statements(sql: str) -> list[str]:
    """Split SQL text into statements at top-level semicolons (not inside quotes, dollar quotes or
    comments), each without its leading comments and its semicolon; empty ones are left out."""
    out: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c in ("'", '"'):
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # a doubled quote inside
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
        elif c == "$" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            tag = re.match(r"\$(?:[A-Za-z_]\w*)?\$", sql[i:])
            if tag:
                j = sql.find(tag.group(0), i + len(tag.group(0)))
                i = n if j < 0 else j + len(tag.group(0))
            else:
                i += 1
        elif c == ";":
            out.append(sql[start:i])
            start = i = i + 1
        else:
            i += 1
    out.append(sql[start:])
    return [s for s in (_strip_leading_comments(s) for s in out) if s]


def _strip_leading_comments(statement: str) -> str:
    lines = statement.strip().splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "\n".join(lines).strip()


def function_events(sql: str) -> dict[str, str | None]:
    """Function name -> its last top-level ``CREATE [OR REPLACE] FUNCTION`` statement in ``sql``,
    or None where the last word on it is a ``DROP FUNCTION``. Functions created inside a ``DO``
    block or a generator's ``format()`` are not top-level and not listed."""
    out: dict[str, str | None] = {}
    for statement in statements(sql):
        created = _CREATE_FUNCTION.match(statement)
        if created:
            out[created.group(1)] = statement + ";\n"
            continue
        dropped = _DROP_FUNCTION.match(statement)
        if dropped:
            for name in re.findall(r"(?:^|,)\s*(?:\w+\.)?(\w+)", re.sub(r"\([^)]*\)", "", dropped.group(1))):
                out[name] = None
    return out


def functions_defined(sql: str) -> dict[str, str]:
    """Function name -> the ``CREATE`` statement ``sql`` leaves it with (see :func:`function_events`).
    Names are unique: a changed signature gets a new name."""
    return {name: body for name, body in function_events(sql).items() if body is not None}


def functions_dropped(sql: str) -> list[str]:
    """The functions ``sql`` drops (and does not create again after)."""
    return [name for name, body in function_events(sql).items() if body is None]


def definition(function: str, as_of: str) -> str:
    """The ``CREATE`` statement of ``function`` as revision ``as_of`` (0017 or later) left it.

    Raises LookupError if it did not exist then (no SQL file up to ``as_of`` defines it, or the
    newest one that mentions it drops it), ValueError for a revision before 0017."""
    if not (as_of.isdigit() and as_of >= LEGACY_LAST):
        raise ValueError(f"definitions are kept by revision from {LEGACY_LAST} on, not as of {as_of!r}")
    for revision in reversed([r for r in revision_files() if r <= as_of]):
        events = function_events(revision_sql(revision))
        if function in events:
            found = events[function]
            if found is None:
                raise LookupError(f"function {function} was dropped by revision {revision}")
            return found
    for name in reversed(LEGACY.FILES):
        found = functions_defined(LEGACY.load(name)).get(function)
        if found:
            return found
    raise LookupError(f"no SQL file up to revision {as_of} defines function {function}")


def revert_functions(conn: Connection, revision: str, previous: str) -> list[str]:
    """Undo what ``revision``'s SQL file does to functions: each one it defines or drops that
    existed as of ``previous`` gets that definition back, the ones it added are dropped. What
    else the file does (tables, triggers, calls) the revision's ``downgrade()`` undoes itself.
    Returns the dropped functions."""
    dropped = []
    for function in function_events(revision_sql(revision)):
        try:
            run_sql(conn, definition(function, previous))
        except LookupError:
            dropped.append(function)
    for function in dropped:
        run_sql(conn, f"DROP FUNCTION {function}")  # names are unique (versioned), so no argument list
    return dropped


def signature(statement: str) -> str:
    """``name(arguments) RETURNS type`` of a ``CREATE FUNCTION`` statement, whitespace collapsed:
    what a caller depends on. Two definitions with the same signature are interchangeable for an
    older caller only if they also mean the same; a new meaning takes a new name (``_v2``)."""
    match = _CREATE_FUNCTION.match(statement)
    if not match:
        raise ValueError(f"not a CREATE FUNCTION statement: {statement[:80]!r}")
    depth, i = 0, match.end() - 1
    while True:
        depth += {"(": 1, ")": -1}.get(statement[i], 0)
        if depth == 0:
            break
        i += 1
    returns = re.match(r"\s*RETURNS\s+(.*?)\s+(?:LANGUAGE|AS|SET|STABLE|IMMUTABLE|VOLATILE|STRICT|SECURITY)\b",
                       statement[i + 1:], re.IGNORECASE | re.DOTALL)
    head = f"{match.group(1)}{statement[match.end() - 1:i + 1]} RETURNS {returns.group(1) if returns else '?'}"
    return " ".join(head.split())
