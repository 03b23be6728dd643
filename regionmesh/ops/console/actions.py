"""The console's actions, run where they must be: cancel and retry in the run's owner region,
through the same lifecycle functions as ``regionmesh runs cancel|retry --region OWNER``.

Every action, done or refused, is a replicated fact: a row of ``console_actions`` written in the
console's region (who, what, which run and tenant, where it ran, outcome), shown by every region's
console on its audit page; and a log line, ``console.action``."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

from regionmesh.errors import RegionmeshError, RunNotFound
from regionmesh.log import event
from regionmesh.models import console as repo
from regionmesh.models.residency import run_summary
from regionmesh.models.runs import get_run
from regionmesh.ops.console import present
from regionmesh.ops.console.views import Console
from regionmesh.workers.app import create_app
from regionmesh.workers.definitions import Registry
from regionmesh.workers.lifecycle import cancel, retry

ACTIONS = ("cancel", "retry")


def owner_of(c: Console, run_id: uuid.UUID) -> tuple[str, str]:
    """The run's owner region and tenant as this copy holds them (a summary outside the run's zone)."""
    run = get_run(c.engine, run_id) or run_summary(c.engine, run_id)
    if run is None:
        raise RunNotFound(str(run_id))
    return str(run["owner_region"]), str(run["tenant_id"])


def _runtime(c: Console, region: str, cache: dict[str, Any]) -> Any:
    """A runtime serving ``region`` (its database and broker), made once per region."""
    if region not in cache:
        config = dataclasses.replace(c.config, local_region=region)
        cache[region] = create_app(config, registry=Registry()).rm
    return cache[region]


def act(c: Console, action: str, run_id: uuid.UUID, user: str, cache: dict[str, Any]) -> tuple[bool, str]:
    """Take ``action`` on the run in its owner region and record it (``console_actions``).
    Returns (done, message for the page)."""
    if action not in ACTIONS:
        return False, f"unknown action {action!r}"
    owner: str | None = None
    tenant: str | None = None
    outcome = "error"
    message = "failed unexpectedly"
    try:
        owner, tenant = owner_of(c, run_id)
        rt = _runtime(c, owner, cache)
        if action == "cancel":
            cancel(rt, run_id)
            message = f"cancelled in {owner}"
        else:
            message = f"retrying in {owner}: {retry(rt, run_id)} task(s) queued"
        outcome = "done"
    except RegionmeshError as exc:
        outcome, message = "refused", str(exc)
    finally:
        event(logging.INFO, "console.action", region=c.region, run=run_id, action=action, user=user or "-",
              owner=owner, done=outcome == "done", outcome=message)
        record(c, user=user, action=action, target=str(run_id), tenant_id=tenant, acted_region=owner,
               outcome=outcome, detail=message)
    return outcome == "done", message


def record(c: Console, *, user: str, action: str, target: str, tenant_id: str | None, acted_region: str | None,
           outcome: str, detail: str | None) -> None:
    """Write the audit row; a failure to write it is logged, never hides the action's own outcome."""
    try:
        repo.record_action(c.engine, actor=user or "-", action=action, target=target, tenant_id=tenant_id,
                           acted_region=acted_region, outcome=outcome, detail=present.redact(detail or "")[:500])
    except Exception as exc:  # the region's database is unreachable: the log line above remains
        event(logging.ERROR, "console.audit_failed", region=c.region, action=action, target=target,
              error=present.short_error(f"{type(exc).__name__}: {exc}"))
