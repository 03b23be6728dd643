"""regionmesh: multi-master, multi-region workflow execution on Celery, Redis and PostgreSQL."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["submit"]


def submit(*args: Any, **kwargs: Any) -> Any:
    """Submit a workflow run; see :func:`regionmesh.client.submit`."""
    from regionmesh.client import submit as _submit

    return _submit(*args, **kwargs)
