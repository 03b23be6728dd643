"""The raw-Celery baseline: no-op tasks on the same broker with the same settings
regionmesh uses (JSON, late acks, prefetch 1). Completion is counted in Redis."""

from __future__ import annotations

import os

import redis
from celery import Celery

from regionmesh.config import Settings
from regionmesh.workers.app import celery_settings

BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15")
QUEUE = "bench.raw"

app = Celery("bench-baseline", set_as_current=False)
app.conf.update(celery_settings("bench", BROKER, Settings()))
app.conf.update(task_default_queue=QUEUE, task_routes={}, worker_consumer="celery.worker.consumer:Consumer")
_counter: redis.Redis | None = None


def _count(key: str) -> None:
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(BROKER)
    _counter.incr(key)


@app.task(name="bench.noop", ignore_result=True)
def noop(*args: object, key: str = "bench:raw") -> None:
    _count(key)


@app.task(name="bench.link")
def link(*args: object) -> int:
    return 0


@app.task(name="bench.chain_end", ignore_result=True)
def chain_end(*args: object) -> None:
    _count("bench:chain")
