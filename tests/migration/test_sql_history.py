"""The migration SQL files as history: immutable, one per revision from 0018 on, replaying to the
current view, and no function an older release calls lost or changed in signature.

No database: these run in seconds (they read files and, where the clone has it, git history).
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from regionmesh.migrations import history
from regionmesh.models import schema_sql
from regionmesh.ops.migrate import script

ROOT = Path(__file__).resolve().parents[2]
SQL = ROOT / "migrations" / "sql"
SUMS_PATH = "migrations/sql/SHA256SUMS"


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def has_commit(commit: str) -> bool:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return False
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                          check=False, capture_output=True).returncode == 0


needs_release = pytest.mark.skipif(not has_commit(history.PREVIOUS_RELEASE),
                                   reason=f"git history with {history.PREVIOUS_RELEASE} (a fresh clone has it)")


def sums() -> dict[str, str]:
    out = {}
    for line in (SQL / history.SUMS).read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        out[name] = digest
    return out


def files_under_sql() -> set[str]:
    return {str(p.relative_to(SQL)) for p in SQL.rglob("*") if p.is_file() and p.name != history.SUMS}


def test_every_migration_sql_file_has_its_checked_in_hash() -> None:
    listed = sums()
    assert set(listed) == files_under_sql(), "add the new file's line to migrations/sql/SHA256SUMS (sha256sum)"
    changed = [name for name, digest in listed.items()
               if hashlib.sha256((SQL / name).read_bytes()).hexdigest() != digest]
    assert changed == [], (f"{changed}: a migration's SQL file is history and is never edited; "
                           "write the change as a new revision (docs/howto/migrations.md)")


def test_the_hash_check_sees_an_edited_file(tmp_path: Path) -> None:
    edited = tmp_path / "0018.sql"
    edited.write_bytes((SQL / "0018_primary_key.sql").read_bytes().replace(b"STABLE", b"VOLATILE"))
    assert hashlib.sha256(edited.read_bytes()).hexdigest() != sums()["0018_primary_key.sql"]


@needs_release
def test_no_commit_changed_a_migration_sql_file_after_adding_it() -> None:
    # M: modified, D: deleted, R: renamed away; the hashes above catch an edit not committed yet.
    # SHA256SUMS grows by a line per new revision; that it never loses or changes one is checked below.
    touched = git("log", "--format=%h %s", "--diff-filter=MDR", "--", "migrations/sql", f":!{SUMS_PATH}").strip()
    assert touched == "", f"commits that edit migration SQL files (history is never edited):\n{touched}"


@needs_release
def test_the_checked_in_hashes_only_ever_grow() -> None:
    removed = [line for line in git("log", "-p", "--format=", "--", SUMS_PATH).splitlines()
               if line.startswith("-") and not line.startswith("---")]
    assert removed == [], f"a commit changed or removed a hash in {SUMS_PATH} (add a line per new file only)"


@needs_release
def test_the_0017_view_is_models_sql_as_of_the_release_before_0018() -> None:
    names = git("ls-tree", "--name-only", f"{history.PREVIOUS_RELEASE}:models/sql").split()
    assert sorted(names) == sorted(history.LEGACY_FILES)
    for name in names:
        then = git("show", f"{history.PREVIOUS_RELEASE}:models/sql/{name}")
        assert history.LEGACY.load(name) == then, name
    source = git("show", f"{history.PREVIOUS_RELEASE}:models/schema_sql.py")
    files_then = re.search(r"^FILES: tuple\[str, \.\.\.\] = (\(.*?\))$", source, re.MULTILINE | re.DOTALL)
    assert files_then and ast.literal_eval(files_then.group(1)) == history.LEGACY_FILES


def test_each_revision_from_0018_on_has_exactly_one_sql_file_and_no_sql_of_its_own() -> None:
    revisions = {r.revision: r for r in script().walk_revisions()}
    new_style = sorted(r for r in revisions if r.isdigit() and r > history.LEGACY_LAST)
    assert new_style, "no revision after 0017"
    assert sorted(history.revision_files()) == new_style
    for rev in new_style:
        source = Path(revisions[rev].path).read_text(encoding="utf-8")
        # The view moves on; a revision that applied it would change meaning with every later edit.
        assert "schema_sql" not in source, f"{rev} applies models/sql; it runs its own SQL file"
        assert not re.search(r"CREATE\s+(OR\s+REPLACE\s+)?FUNCTION", source), f"{rev} carries SQL; move it to its file"


def test_legacy_revisions_get_the_view_as_of_0017() -> None:
    sd = script()
    bound = history.bind_legacy_revisions(sd)
    assert {"0008", "0009", "0012", "0013", "0014", "0015", "0016", "0017"} <= set(bound)
    assert all(r <= history.LEGACY_LAST for r in bound)
    assert sd.get_revision("0008").module.schema_sql is history.LEGACY  # type: ignore[union-attr]
    assert sd.get_revision("0018").module.history is history  # type: ignore[union-attr]


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
    ("-- a; comment\nSELECT ';' ;", ["SELECT ';'"]),
    ("SELECT 'it''s; fine'; /* ; */ SELECT \"a;b\"", ["SELECT 'it''s; fine'", "/* ; */ SELECT \"a;b\""]),
    ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $gen$ BEGIN EXECUTE format($f$ x; $f$); END $gen$;"
     " SELECT f();",
     ["CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $gen$ BEGIN EXECUTE format($f$ x; $f$); END $gen$",
      "SELECT f()"]),
    ("SELECT $$a;b$$; SELECT format('%1$I;', 'x')", ["SELECT $$a;b$$", "SELECT format('%1$I;', 'x')"]),
])
def test_statements_split_only_at_top_level_semicolons(sql: str, expected: list[str]) -> None:
    assert history.statements(sql) == expected


def test_definition_as_of_a_revision_comes_from_that_revisions_files() -> None:
    at_0017 = history.definition("rm_install_conflict_triggers", "0017")
    at_0018 = history.definition("rm_install_conflict_triggers", "0018")
    assert "indisprimary" in at_0017 and "rm_primary_key(p_table)" not in at_0017
    assert "rm_primary_key(p_table)" in at_0018
    assert history.definition("rm_claim_task", "0018") == history.definition("rm_claim_task", "0017")
    with pytest.raises(LookupError, match="rm_primary_key"):
        history.definition("rm_primary_key", "0017")
    with pytest.raises(ValueError, match="0016"):
        history.definition("rm_claim_task", "0016")


def view_functions() -> dict[str, str]:
    return {name: body for file in schema_sql.FILES
            for name, body in history.functions_defined(schema_sql.load(file)).items()}


def ever_defined() -> set[str]:
    """Every function the 0017 view or a revision file from 0018 on defines."""
    known = {f for r in history.revision_files() for f in history.functions_defined(history.revision_sql(r))}
    return known | {f for name in history.LEGACY.FILES for f in history.functions_defined(history.LEGACY.load(name))}


def test_replaying_the_sql_files_gives_the_view_function_by_function() -> None:
    # The textual twin of tests/migration/test_sql_files.py (which compares databases): the newest
    # definition of every function in the migration files is the view's, byte for byte.
    head = max(history.revision_files())
    view = view_functions()
    assert {f: history.definition(f, head) for f in view} == view
    for function in ever_defined() - set(view):
        with pytest.raises(LookupError, match="dropped"):
            history.definition(function, head)


def test_every_function_gone_from_the_view_was_dropped_by_the_revision_retired_names() -> None:
    gone = ever_defined() - set(view_functions())
    assert gone == set(history.RETIRED), "history.RETIRED lists exactly the functions a revision dropped"
    for function, revision in history.RETIRED.items():
        assert function in history.functions_dropped(history.revision_sql(revision)), (function, revision)


def test_function_events_follow_creates_and_drops_in_order() -> None:
    sql = ("CREATE OR REPLACE FUNCTION rm_a() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n"
           "DROP FUNCTION rm_b(uuid, text), public.rm_c() CASCADE;\n"
           "DROP FUNCTION IF EXISTS rm_a;\n"
           "CREATE FUNCTION rm_a_v2(p int) RETURNS int LANGUAGE sql AS $$ SELECT p $$;")
    events = history.function_events(sql)
    assert events == {"rm_a": None, "rm_b": None, "rm_c": None,
                      "rm_a_v2": "CREATE FUNCTION rm_a_v2(p int) RETURNS int LANGUAGE sql AS $$ SELECT p $$;\n"}
    assert history.functions_dropped(sql) == ["rm_a", "rm_b", "rm_c"]
    assert list(history.functions_defined(sql)) == ["rm_a_v2"]


def called_by(commit: str) -> set[str]:
    """The rm_* functions the shipped Python of ``commit`` calls (not its migrations, tests or bench)."""
    found = git("grep", "-ohE", r"\brm_[a-z0-9_]+\(", commit, "--", "*.py", ":!migrations", ":!tests", ":!bench")
    return {name.rstrip("(") for name in found.split()}


def view_signatures(commit: str | None) -> dict[str, str]:
    if commit is None:
        texts = [schema_sql.load(f) for f in schema_sql.FILES]
    else:
        texts = [git("show", f"{commit}:models/sql/{f}") for f in git("ls-tree", "--name-only", f"{commit}:models/sql").split()]
    return {name: history.signature(body) for text in texts for name, body in history.functions_defined(text).items()}


@needs_release
def test_every_function_the_previous_release_calls_is_at_head_with_the_same_signature() -> None:
    called = called_by(history.PREVIOUS_RELEASE)
    assert {"rm_claim_task", "rm_complete_and_claim", "rm_place_run", "rm_install_conflict_triggers"} <= called
    then, now = view_signatures(history.PREVIOUS_RELEASE), view_signatures(None)
    missing = sorted(f for f in called & set(then) if f not in now)
    assert missing == [], (f"{missing}: the previous release's workers call these; keep them until a later release "
                           "(versioned names, docs/howto/migrations.md)")
    changed = sorted(f for f in called & set(then) if now[f] != then[f])
    assert changed == [], f"{changed}: a changed signature takes a new name (rm_<name>_v2); keep the old one"
    retired_but_called = sorted(set(history.RETIRED) & called)
    assert retired_but_called == [], f"{retired_but_called}: the previous release still calls these"


def test_the_signature_check_sees_a_changed_signature() -> None:
    before = "CREATE OR REPLACE FUNCTION rm_claim_task(p_task uuid, p_region text) RETURNS jsonb LANGUAGE sql AS $$ $$"
    after = before.replace("p_region text", "p_region text, p_zone text")
    assert history.signature(before) == "rm_claim_task(p_task uuid, p_region text) RETURNS jsonb"
    assert history.signature(after) != history.signature(before)
    assert history.signature(before.replace("RETURNS jsonb", "RETURNS SETOF uuid")) != history.signature(before)


def test_the_wheel_ships_every_migration_sql_file() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    patterns = [p.strip() for p in cfg["options.package_data"]["regionmesh.migrations"].replace("\n", ",").split(",")]
    shipped = {str(p.relative_to(ROOT / "migrations")) for p in SQL.rglob("*") if p.is_file()}
    missing = sorted(f for f in shipped if not any(fnmatch.fnmatchcase(f, pat) and f.count("/") == pat.count("/")
                                                    for pat in patterns if pat))
    assert missing == [], f"{missing}: not in setup.cfg's [options.package_data] regionmesh.migrations"
