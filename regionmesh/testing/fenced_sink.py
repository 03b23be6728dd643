"""The external ledger as a fencing sink (Kleppmann's fencing tokens), for
``tests/acceptance/test_fenced_sink.py``. Workers load it by module path beside
``regionmesh.testing.workflows``, whose ledger it writes.

The sink keeps, per idempotency key, the largest fencing token it has accepted (``fence.json`` in
the folder the run's input names as ``sink``, the ledger's, read and written under an exclusive ``flock`` of ``fence.lock``, so the pool
processes of every region on this host agree on it) and refuses a write with a smaller token. The
handler ``t.fenced`` writes ``start``, then its effect through the sink: an ``effect`` line when the
sink took it, a ``refused`` line when it did not.

A test holds one execution between the two: it submits the run with input ``{"hold": name}`` and
creates ``hold-<name>`` first; the first execution to rename it to ``holding-<name>`` waits (up to
``HOLD_MAX_S``) until ``release-<name>`` exists. Meanwhile the test hands the task to another execution (a re-queue, an adoption), whose
larger token reaches the sink first.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regionmesh.testing.workflows import ledger_write
from regionmesh.workers.definitions import Step, Workflow
from regionmesh.workers.executor import StepContext
from regionmesh.workers.registry import default_registry as registry

HOLD_MAX_S = 120.0


def sink_write(folder: Path, key: str, token: int) -> int | None:
    """Accept ``token`` for ``key`` unless the sink already took a larger one; returns None when it
    accepted, else the larger token it keeps (the write is refused). Tokens are compared as Python
    integers (they outgrow 64 bits from epoch 923) and stored as decimal strings."""
    with open(folder / "fence.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / "fence.json"
        kept: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        best = int(kept.get(key, "-1"))
        if token < best:
            return best
        kept[key] = str(token)
        tmp = folder / "fence.json.tmp"
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, path)  # whole or not at all, under the lock
        return None


def _hold(folder: Path, name: str) -> None:
    """Wait for ``release-<name>`` if this execution is the one the test holds (see the module)."""
    try:
        os.rename(folder / f"hold-{name}", folder / f"holding-{name}")
    except FileNotFoundError:
        return  # not held: no hold file, or another execution took it
    end = time.monotonic() + HOLD_MAX_S
    while not (folder / f"release-{name}").exists() and time.monotonic() < end:
        threading.Event().wait(0.05)  # not time.sleep: libfaketime breaks clock_nanosleep


@registry.handler("t.fenced")
def fenced(ctx: StepContext, payload: Any) -> dict[str, Any]:
    cfg = payload if isinstance(payload, Mapping) else {}
    folder = Path(str(cfg["sink"]))  # the test passes the ledger's folder (RM_TEST_LEDGER)
    ledger_write(ctx, "start")
    if cfg.get("hold"):
        _hold(folder, str(cfg["hold"]))
    over = sink_write(folder, ctx.idempotency_key, ctx.fencing_token)
    ledger_write(ctx, "effect" if over is None else "refused")
    return {"token": str(ctx.fencing_token)}


# A long timeout: the step limit and the reconciler's deadline stay out of the held execution's way.
registry.register(Workflow("t_fenced", steps=(Step("only", "t.fenced", timeout_s=120.0),)))
