"""The Celery app of one region: ``celery -A regionmesh.workers.app worker -Q rm.<region>.submit,rm.<region>.steps``.

Built from the mesh file (``$REGIONMESH_CONFIG``) and ``$REGIONMESH_REGION``
on first access of ``regionmesh.workers.app.app``; ``create_app`` builds one explicitly.
Workflows come from the modules in ``$REGIONMESH_WORKFLOWS`` (default:
``regionmesh.workers.examples``).

Environment: ``REGIONMESH_WORKFLOWS``, ``REGIONMESH_RECONCILE_INTERVAL_S`` (1),
``REGIONMESH_REQUEUE_AFTER_S`` (30), ``REGIONMESH_DEADLINE_SLACK_S`` (5),
``REGIONMESH_VISIBILITY_TIMEOUT_S`` (3600).
"""

from __future__ import annotations

import importlib
import os
import ssl
import time
from typing import Any

from celery import Celery, signals
from regionmesh.workers.definitions import Registry
from regionmesh.workers.fence import FenceKeeper
from regionmesh.workers.names import RUN_STEP_TASK, SUBMIT_TASK, steps_queue, submit_queue
from regionmesh.workers.reconciler import Reconciler, ReconcilerSettings
from regionmesh.workers.registry import default_registry
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.sweep import others_alive, restore_orphaned
from regionmesh.workers.tasks import register_tasks

from regionmesh.config import MeshConfig, load_config

VISIBILITY_TIMEOUT_S = int(os.environ.get("REGIONMESH_VISIBILITY_TIMEOUT_S", "3600"))


def broker_options(broker_url: str) -> dict[str, Any]:
    """Transport options every connection to a region's broker uses (own and peers')."""
    return {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "retry_on_timeout": True,
        "health_check_interval": 25,
    }


def celery_settings(region: str, broker_url: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker_url": broker_url,
        "broker_transport_options": broker_options(broker_url),
        "broker_connection_retry_on_startup": True,
        # JSON only: a pickle message is refused before it reaches a task.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        # At-least-once delivery; PostgreSQL makes the effect once.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": VISIBILITY_TIMEOUT_S - 60,
        "task_default_queue": steps_queue(region),
        "task_routes": {
            SUBMIT_TASK: {"queue": submit_queue(region)},
            RUN_STEP_TASK: {"queue": steps_queue(region)},
        },
        "task_create_missing_queues": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_consumer": "regionmesh.workers.consumer:DeadLetterConsumer",
    }
    if broker_url.startswith("rediss://"):
        conf["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return conf


def load_workflows(modules: str | None = None) -> Registry:
    """Import the workflow modules (they register into the default registry)."""
    names = modules if modules is not None else os.environ.get("REGIONMESH_WORKFLOWS", "regionmesh.workers.examples")
    for name in filter(None, (n.strip() for n in names.split(","))):
        importlib.import_module(name)
    return default_registry


def reconciler_settings() -> ReconcilerSettings:
    env = os.environ
    return ReconcilerSettings(
        interval_s=float(env.get("REGIONMESH_RECONCILE_INTERVAL_S", "1")),
        requeue_after_s=float(env.get("REGIONMESH_REQUEUE_AFTER_S", "30")),
        deadline_slack_s=float(env.get("REGIONMESH_DEADLINE_SLACK_S", "5")),
    )


def create_app(config: MeshConfig | None = None, registry: Registry | None = None) -> Celery:
    """A Celery app serving the config's local region."""
    config = config or load_config()
    region = config.local.name
    app = Celery(f"regionmesh-{region}", set_as_current=False)
    app.conf.update(celery_settings(region, config.local.broker_url))
    rt = Runtime(config, registry or load_workflows(), app)
    app.rm = rt
    register_tasks(app, rt)
    _wire_reconciler(app, rt)
    return app


def _wire_reconciler(app: Celery, rt: Runtime) -> None:
    holder: dict[str, Any] = {}
    fence_keeper = FenceKeeper(rt, rejoin_after_s=float(os.environ.get("REGIONMESH_REJOIN_AFTER_S", "10")),
                               caught_up_s=float(os.environ.get("REGIONMESH_CAUGHT_UP_S", "5")))

    @signals.worker_init.connect(weak=False)
    def fence_first(sender: Any = None, **_: Any) -> None:
        # Before any message is consumed: a region back from being away must not
        # run what moved while it was gone.
        from regionmesh.workers.log import event

        try:
            fence_keeper()
        except Exception as exc:  # the database may be down; claims fail then anyway
            event(30, "fence.check_failed", region=rt.region, error=exc)
        holder["started_at"] = time.time()

    @signals.worker_ready.connect(weak=False)
    def start(sender: Any = None, **_: Any) -> None:
        if sender is not None and getattr(sender, "app", app) is not app:
            return
        # Messages held by workers that died (SIGKILL, a lost host) go back now, not in an hour.
        try:
            me = getattr(sender, "hostname", "")
            if others_alive(app, me) == 0:
                restore_orphaned(app, rt.region, float(holder.get("started_at", time.time())))
        except Exception as exc:  # the broker may be down; the visibility timeout still applies
            from regionmesh.workers.log import event

            event(30, "broker.restore_failed", region=rt.region, error=exc)
        from regionmesh.replication.heartbeat import heartbeat_job
        from regionmesh.workers.forward import drain_outbox

        recon = Reconciler(rt, reconciler_settings(),
                           extra_jobs=(fence_keeper, heartbeat_job(rt), lambda: drain_outbox(rt)))
        holder["r"] = recon
        recon.start()

    @signals.worker_shutting_down.connect(weak=False)
    def stop(**_: Any) -> None:
        if "r" in holder:
            holder["r"].stop()


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    # ``celery -A regionmesh.workers.app`` looks up ``app``; build it on first access, not at import.
    global _app
    if name in ("app", "celery"):
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
