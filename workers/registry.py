"""The default registry that workflow modules register into (like Celery's shared_task)."""

from __future__ import annotations

from regionmesh.workers import waits
from regionmesh.workers.definitions import Registry

default_registry = Registry()
waits.install(default_registry.handlers)  # Sleep, SleepUntil, WaitFor
