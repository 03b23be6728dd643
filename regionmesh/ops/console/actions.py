"""The console's actions, run where they must be: cancel and retry in the run's owner region,
through the same lifecycle functions as ``regionmesh runs cancel|retry --region OWNER``.

Each action is logged as ``console.action`` (who, what, which run, owner region, outcome); a
replicated audit table is not built yet (it needs a migration)."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

from regionmesh.errors import RegionmeshError, RunNotFound
from regionmesh.log import event
from regionmesh.models.residency import run_summary
from regionmesh.models.runs import get_run
from regionmesh.ops.console.views import Console
from regionmesh.workers.app import create_app
from regionmesh.workers.definitions import Registry
from regionmesh.workers.lifecycle import cancel, retry

ACTIONS = ("cancel", "retry")


def owner_of(c: Console, run_id: uuid.UUID) -> str:
    """The run's owner region as this copy holds it (a summary outside the run's zone)."""
    run = get_run(c.engine, run_id)
    if run is not None:
        return str(run["owner_region"])
    summary = run_summary(c.engine, run_id)
    if summary is None:
        raise RunNotFound(str(run_id))
    return str(summary["owner_region"])


def _runtime(c: Console, region: str, cache: dict[str, Any]) -> Any:
    """A runtime serving ``region`` (its database and broker), made once per region."""
    if region not in cache:
        config = dataclasses.replace(c.config, local_region=region)
        cache[region] = create_app(config, registry=Registry()).rm
    return cache[region]


def act(c: Console, action: str, run_id: uuid.UUID, user: str, cache: dict[str, Any]) -> tuple[bool, str]:
    """Take ``action`` on the run in its owner region. Returns (done, message for the page)."""
    if action not in ACTIONS:
        return False, f"unknown action {action!r}"
    owner: str | None = None
    try:
        owner = owner_of(c, run_id)
        rt = _runtime(c, owner, cache)
        if action == "cancel":
            cancel(rt, run_id)
            message = f"cancelled in {owner}"
        else:
            message = f"retrying in {owner}: {retry(rt, run_id)} task(s) queued"
        done = True
    except RegionmeshError as exc:
        done, message = False, str(exc)
    event(logging.INFO, "console.action", region=c.region, run=run_id, action=action, user=user or "-",
          owner=owner, done=done, outcome=message)
    return done, message
