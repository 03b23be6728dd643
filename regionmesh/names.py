"""Wire names: everything another process, region or language sees by name.

Celery task names and queue names, the publication and the per-pair
subscriptions (and their slots). Listed in docs/reference/wire.md; change a task's
arguments incompatibly and its name gets a new version suffix.
"""

from __future__ import annotations

SUBMIT_TASK = "regionmesh.submit"  # kwargs: tenant_id, workflow, input, idempotency_key, submission_id, v=1
RUN_STEP_TASK = "regionmesh.run_step.v1"  # kwargs: task_id
# Home -> forwarder: a forwarded submission was rejected. kwargs: submission_id, run_id (or null),
# tenant_id, region (the home), reason. Carries no input.
REJECTED_TASK = "regionmesh.rejected.v1"
# Home -> forwarder outside a zoned tenant's zone: the forwarded submission is a run here.
# kwargs: region (the home), run_id, submission_id (or null). Carries no input.
RECEIVED_TASK = "regionmesh.received.v1"
# A signal to a run (issue 23), on any region's submit queue. kwargs: tenant_id, run_id (or the run's
# idempotency_key), name, payload (JSON), key (optional: the task id), v=1. workers/signal_task.py.
SIGNAL_TASK = "regionmesh.signal"

# The kombu message priority of low-band submissions with fair dispatch on: kombu's Redis transport
# keeps them in the list ``rm.<region>.submit\x06\x169``, popped after the plain list (issue 22).
BULK_LANE = 9

PUBLICATION = "rm_pub"


def submit_queue(region: str) -> str:
    return f"rm.{region}.submit"


def steps_queue(region: str) -> str:
    return f"rm.{region}.steps"


def zoned_publication(subscriber: str) -> str:
    """``rm_pub_to_<subscriber>``: a publisher's payload tables filtered to what that subscriber may
    hold (unzoned rows and its zone's); '-' becomes '_'."""
    return f"rm_pub_to_{subscriber}".replace("-", "_")


def subscription_publications(subscriber: str) -> str:
    """What every subscription of ``subscriber`` subscribes to, as CREATE SUBSCRIPTION lists it."""
    return f"{PUBLICATION}, {zoned_publication(subscriber)}"


def subscription_name(subscriber: str, publisher: str) -> str:
    """``rm_<subscriber>_from_<publisher>``; '-' becomes '_' (slot names allow [a-z0-9_] only)."""
    return f"rm_{subscriber}_from_{publisher}".replace("-", "_")
