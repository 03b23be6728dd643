"""Per-process resources of a region's worker: config, database engine, registry, publisher.

Built once from the config by ``create_app``; the engine is re-created after
a fork (prefork children must not share their parent's connections).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from regionmesh.config import MeshConfig
from regionmesh.models.engine import engine_for
from regionmesh.names import RUN_STEP_TASK, steps_queue
from regionmesh.routing.router import Router
from regionmesh.workers.definitions import Registry

if TYPE_CHECKING:
    from celery import Celery


class Runtime:
    def __init__(self, config: MeshConfig, registry: Registry, app: Celery) -> None:
        self.config = config
        self.region = config.local.name
        self.registry = registry
        self.app = app
        self._router: Router | None = None
        # When this worker's consumer last lost its broker connection (and the messages it held
        # may not have gone back): the reconciler gives them back once the broker answers.
        self.broker_lost_at: float | None = None

    @property
    def engine(self) -> Engine:
        """This process's engine for the local region (prefork children get their own)."""
        return engine_for(self.config, self.region)

    @property
    def router(self) -> Router:
        """Tenant placement from this region's copy of the registry (cached briefly)."""
        if self._router is None or self._router.engine is not self.engine:
            self._router = Router(self.engine, list(self.config.regions))
        return self._router

    @property
    def worker_id(self) -> str:
        """``host:pid``: lets a worker on the same host see that a holder died."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def publish_steps(self, task_ids: Iterable[uuid.UUID], countdown: float | None = None) -> int:
        """Publish run_step messages after commit. Returns how many were sent.

        A failed publish is not an error for the caller: the tasks stay queued
        in PostgreSQL and the reconciler publishes them again.
        """
        ids = list(task_ids)
        if not ids:
            return 0
        queue = steps_queue(self.region)
        with self.app.producer_or_acquire() as producer:
            for task_id in ids:
                self.app.send_task(
                    RUN_STEP_TASK, kwargs={"task_id": str(task_id)}, queue=queue, routing_key=queue,
                    producer=producer, countdown=countdown,
                )
        return len(ids)
