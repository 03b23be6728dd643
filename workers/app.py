"""The Celery app of one region: ``celery -A regionmesh.workers.app worker -Q rm.<region>.submit,rm.<region>.steps``.

Built from the mesh file (``$REGIONMESH_CONFIG``) and ``$REGIONMESH_REGION``
on first access of ``regionmesh.workers.app.app``; ``create_app`` builds one explicitly.
Workflows come from the modules the config's settings name (``$REGIONMESH_WORKFLOWS``,
default ``regionmesh.workers.examples``); every tuning knob is read by ``regionmesh.config``.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from celery import Celery, signals

from regionmesh.broker import PROC_ALIVE_TIMEOUT_S, connection_settings, others_alive, restore_orphaned
from regionmesh.config import MeshConfig, Settings, load_config
from regionmesh.log import event
from regionmesh.models import link_health
from regionmesh.names import RUN_STEP_TASK, SIGNAL_TASK, SUBMIT_TASK, steps_queue, submit_queue
from regionmesh.workers.definitions import Registry
from regionmesh.workers.erasure import ErasureJob
from regionmesh.workers.forward import drain_outbox
from regionmesh.workers.lease_keeper import LeaseLoop
from regionmesh.workers.reconciler import Reconciler, ReconcilerSettings
from regionmesh.workers.registry import default_registry
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.signal_task import register_signal_task
from regionmesh.workers.step_limit import allow_process_end
from regionmesh.workers.tasks import register_tasks
from regionmesh.workers.ticker import Ticker
from regionmesh.workers.zone_scrub import ZoneScrubJob


def celery_settings(region: str, broker_url: str, settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = connection_settings(broker_url, settings) | {
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
        "task_time_limit": settings.visibility_timeout_s - 60,
        "task_default_queue": steps_queue(region),
        "task_routes": {
            SUBMIT_TASK: {"queue": submit_queue(region)},
            SIGNAL_TASK: {"queue": submit_queue(region)},
            RUN_STEP_TASK: {"queue": steps_queue(region)},
        },
        "task_create_missing_queues": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_proc_alive_timeout": PROC_ALIVE_TIMEOUT_S,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_consumer": "regionmesh.workers.consumer:DeadLetterConsumer",
    }
    return conf


def load_workflows(modules: list[str]) -> Registry:
    """Import the workflow modules (they register into the default registry)."""
    for name in modules:
        importlib.import_module(name)
    return default_registry


def reconciler_settings(settings: Settings) -> ReconcilerSettings:
    return ReconcilerSettings(
        interval_s=settings.reconcile_interval_s,
        requeue_after_s=settings.requeue_after_s,
        deadline_slack_s=settings.deadline_slack_s,
    )


def create_app(config: MeshConfig | None = None, registry: Registry | None = None) -> Celery:
    """A Celery app serving the config's local region."""
    config = config or load_config()
    region = config.local.name
    app = Celery(f"regionmesh-{region}", set_as_current=False)
    app.conf.update(celery_settings(region, config.local.broker_url, config.settings))
    rt = Runtime(config, registry or load_workflows(config.settings.workflow_modules), app)
    app.rm = rt
    register_tasks(app, rt)
    register_signal_task(app, rt)
    _wire_reconciler(app, rt)
    return app


def _wire_reconciler(app: Celery, rt: Runtime) -> None:
    holder: dict[str, Any] = {}
    settings = rt.config.settings

    @signals.worker_process_init.connect(weak=False)
    def arm_step_ends(**_: Any) -> None:
        # A prefork pool process: a handler that swallows its step's timeout ends the process
        # (workers/step_limit.py). Never armed in a solo or threads worker.
        allow_process_end()

    @signals.worker_init.connect(weak=False)
    def fence_first(sender: Any = None, **_: Any) -> None:
        # A region back from being away works only once a majority grants it a lease again
        # (rm_may_work in every claim): nothing to do here but note when this worker started.
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
            event(30, "broker.restore_failed", region=rt.region, error=exc)
        recon = Reconciler(rt, reconciler_settings(settings),
                           extra_jobs=(ErasureJob(rt), lambda: link_health.observe_link_errors(rt.engine),
                                       ZoneScrubJob(rt), lambda: drain_outbox(rt), lambda: restore_after_loss(app, rt)))
        keeper = LeaseLoop(rt, settings.reconcile_interval_s)
        ticker = Ticker(rt, settings.reconcile_interval_s)  # schedules, timers, signals (issue 23)
        holder["r"] = recon
        holder["k"] = keeper
        holder["t"] = ticker
        keeper.start()
        recon.start()
        ticker.start()

    @signals.worker_shutting_down.connect(weak=False)
    def stop(**_: Any) -> None:
        for loop in ("k", "r", "t"):
            if loop in holder:
                holder[loop].stop()


def restore_after_loss(app: Celery, rt: Runtime) -> int:
    """After the consumer lost its broker connection: put back every message delivered before the
    loss and not acknowledged (this worker's, whose restore at close may have failed with the
    broker down; a live peer's too, which is harmless: run ids and claims make a redelivery a
    no-op). Retried by the reconciler until the broker answers. Returns how many went back."""
    lost_at = rt.broker_lost_at
    if lost_at is None:
        return 0
    try:
        restored = restore_orphaned(app, rt.region, lost_at)
    except Exception:  # the broker is still down: the next pass tries again
        return 0
    if rt.broker_lost_at == lost_at:
        rt.broker_lost_at = None
    return restored


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    # ``celery -A regionmesh.workers.app`` looks up ``app``; build it on first access, not at import.
    global _app
    if name in ("app", "celery"):
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
