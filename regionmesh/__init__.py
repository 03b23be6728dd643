"""regionmesh: multi-master, multi-region workflow execution on Celery, Redis and PostgreSQL."""

__version__ = "0.1.0"
