"""What the checker reads, with its own SQL (never regionmesh's repository functions) and its own
ledger reader: every region's rows about the campaign's tenants, apply error counters, the ledger.
The decisions are elsewhere (``evaluate``, ``compare``), pure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.checker.history import SubmissionRecord

# The rows the checker compares across regions: table -> SQL giving the key, the tenant, then the
# values. Payloads (outputs) are compared as hashes, and only for rows outside a zone (a zoned
# tenant's rows are compared among its zone's regions, and must be absent elsewhere: ``compare``).
_OUTPUT = "CASE WHEN {t}.zone = '' THEN md5(coalesce({t}.output::text, '')) END"
COMPARED = {
    "workflow_runs": "SELECT r.id::text, r.tenant_id, r.idempotency_key, r.status, r.owner_region, r.epoch, "
                     f"{_OUTPUT.format(t='r')}, r.deleted_at IS NOT NULL FROM workflow_runs r WHERE r.tenant_id LIKE :p",
    "workflow_steps": "SELECT s.id::text, w.tenant_id, s.run_id::text, s.step_key, s.status, s.epoch, "
                      f"{_OUTPUT.format(t='s')}, s.deleted_at IS NOT NULL FROM workflow_steps s "
                      "JOIN workflow_runs w ON w.id = s.run_id WHERE w.tenant_id LIKE :p",
    "step_tasks": "SELECT t.id::text, w.tenant_id, t.run_id::text, t.step_key, t.idx, t.status, t.attempt, t.epoch, "
                  f"{_OUTPUT.format(t='t')}, t.deleted_at IS NOT NULL FROM step_tasks t "
                  "JOIN workflow_runs w ON w.id = t.run_id WHERE w.tenant_id LIKE :p",
}


def _engine(url: str) -> Any:
    return create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1), connect_args={"connect_timeout": 5})


def apply_error_counts(urls: dict[str, str]) -> dict[str, int]:
    """subscription -> apply_error_count (reset by a crash restart: a delta is only a hint)."""
    out: dict[str, int] = {}
    for region, url in urls.items():
        engine = _engine(url)
        try:
            with engine.connect() as conn:
                for name, count in conn.execute(text(
                        "SELECT subname, apply_error_count FROM pg_stat_subscription_stats")):
                    out[f"{region}:{name}"] = int(count)
        finally:
            engine.dispose()
    return out


def read_ledger(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("ledger-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn line cannot be an effect anyone relies on
    return out


def gather(urls: dict[str, str], tenant_prefix: str) -> dict[str, Any]:
    """Every region's rows about the campaign's tenants, read with plain SQL: ``runs``, ``tasks``
    (succeeded), ``accepted`` (which execution each one's output says it came from), ``dead_letters``, ``outbox_rejected``, ``created``, ``rows`` (the compared rows,
    table -> region -> {key: value}) and ``submissions`` (the product's record of what each
    submission id became)."""
    runs: dict[str, list[tuple[str, str, str, str]]] = {}
    tasks: set[tuple[str, str, int | None]] = set()
    dead: list[tuple[str, str | None, str | None]] = []
    rejected: list[tuple[str, str, str | None]] = []
    created: dict[tuple[str, str], float] = {}
    submissions: list[SubmissionRecord] = []
    accepted: dict[tuple[str, str, int | None], dict[str, Any]] = {}
    rows: dict[str, dict[str, dict[Any, Any]]] = {table: {} for table in COMPARED}
    like = tenant_prefix + "%"
    for region, url in urls.items():
        engine = _engine(url)
        try:
            with engine.connect() as conn:
                got = conn.execute(text(
                    "SELECT tenant_id, idempotency_key, id, status, extract(epoch FROM created_at) "
                    "FROM workflow_runs WHERE tenant_id LIKE :p"), {"p": like}).all()
                runs[region] = [(r[0], r[1], str(r[2]), r[3]) for r in got]
                for r in got:
                    created[(r[0], r[1])] = min(float(r[4]), created.get((r[0], r[1]), float("inf")))
                for r in conn.execute(text(
                        "SELECT t.run_id, t.step_key, t.idx, t.output -> 'by' FROM step_tasks t "
                        "JOIN workflow_runs w ON w.id = t.run_id WHERE w.tenant_id LIKE :p AND t.status = 'succeeded'"),
                        {"p": like}):
                    tasks.add((str(r[0]), r[1], r[2]))
                    if isinstance(r[3], dict):
                        accepted.setdefault((str(r[0]), r[1], r[2]), r[3])
                dead += [(region, r[0], r[1]) for r in conn.execute(text(
                    "SELECT submission_id, reason FROM dead_letters"))]
                rejected += [(region, r[0], r[1]) for r in conn.execute(text(
                    "SELECT submission_id, rejection FROM outbox WHERE rejected_at IS NOT NULL"))]
                # What each submission became, as the product recorded it: the one that created a
                # run, and every later one found to duplicate it (0019).
                submissions += [SubmissionRecord(region, r[0], str(r[1]), r[2]) for r in conn.execute(text(
                    "SELECT submission_id, id, 'created' FROM workflow_runs "
                    "WHERE tenant_id LIKE :p AND submission_id IS NOT NULL "
                    "UNION ALL SELECT submission_id, run_id, 'duplicate' FROM duplicate_submissions "
                    "WHERE tenant_id LIKE :p"), {"p": like})]
                for table, sql in COMPARED.items():
                    rows[table][region] = {r[0]: tuple(r[1:]) for r in conn.execute(text(sql), {"p": like})}
        finally:
            engine.dispose()
    return {"runs": runs, "tasks": tasks, "dead_letters": dead, "outbox_rejected": rejected, "created": created,
            "rows": rows, "submissions": submissions, "accepted": accepted}


def marker_hits(dumps: dict[str, str], markers: dict[str, str]) -> dict[str, dict[str, int]]:
    """region -> tenant -> occurrences of the tenant's input marker in that region's dump."""
    return {region: {t: n for t, m in markers.items() if (n := dump.count(m))} for region, dump in dumps.items()}


def dump_database(pg_dump: Path, url: str) -> str:
    """Every row of the database behind ``url`` as text (``pg_dump --data-only``): the residency
    check reads what the region holds, whatever table or column it sits in."""
    out = subprocess.run([str(pg_dump), "--data-only", "-d", url], capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pg_dump of {url.rsplit('@', 1)[-1]} failed: {out.stderr.strip()[-400:]}")
    return out.stdout
