"""PostgreSQL's server logs read for apply errors: what a lost connection looks like is forgiven,
anything else a logical replication worker logs as an ERROR is reported."""

from __future__ import annotations

import re
from pathlib import Path

# PostgreSQL log lines about lost connections are what a cut or a killed peer looks like.
NETWORK_ERRORS = ("could not connect to the publisher", "could not receive data from WAL stream",
                  "could not send data to WAL stream", "terminating logical replication worker due to timeout",
                  "server closed the connection unexpectedly", "connection to server", "SSL SYSCALL error",
                  "could not read from", "terminating connection due to administrator command",
                  "terminating connection because of crash of another server process", "Connection refused")
# PostgreSQL 16: an apply worker leaving on a parameter change (ALTER SUBSCRIPTION … CONNECTION, as
# a cut and a heal do) or on a lost connection frees its worker slot before its replication origin;
# the launcher, told to restart it at once, can start the next worker in between, which fails at
# start, before applying anything, and is started again. Only such a race is forgiven: the PID
# holding the origin must be seen leaving in the same log.
ORIGIN_BUSY = re.compile(r"replication origin with ID \d+ is already active for PID (\d+)")


def log_offsets(log_dir: Path) -> dict[str, int]:
    """Where each PostgreSQL log ends now: the campaign scans only what its load and faults wrote
    (pointing the links at the proxies restarts the apply workers once, at setup)."""
    return {log.name: log.stat().st_size for log in log_dir.glob("pg-*.log")}


def scan_pg_logs(log_dir: Path, offsets: dict[str, int] | None = None) -> list[str]:
    """ERROR lines of logical replication workers in every region's PostgreSQL log (from
    ``offsets``), lost connections aside (a cut, a killed peer and a restart produce only those)."""
    found = []
    for log in sorted(log_dir.glob("pg-*.log")):
        with open(log, "rb") as fh:
            fh.seek((offsets or {}).get(log.name, 0))
            lines = fh.read().decode(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if "ERROR:" not in line or any(n in line for n in NETWORK_ERRORS):
                continue
            busy = ORIGIN_BUSY.search(line)
            if busy and worker_was_leaving(lines, busy.group(1)):
                continue
            context = " ".join(lines[i:i + 3])
            if "logical replication" in context or "rm_conflict" in context or "apply" in context:
                found.append(f"{log.name}: {context}")
    return found


def worker_was_leaving(lines: list[str], pid: str) -> bool:
    """Whether the log shows replication worker ``pid`` restarting on a parameter change or exiting."""
    return any((f"[{pid}] " in line and "will restart because of a parameter change" in line)
               or f'"logical replication worker" (PID {pid}) exited' in line for line in lines)
