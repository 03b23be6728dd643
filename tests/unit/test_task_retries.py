"""Which task failures are retried, and a retry whose copy cannot be published keeps the message."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Reject, Retry
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from regionmesh.names import REJECTED_TASK, RUN_STEP_TASK, SUBMIT_TASK
from regionmesh.workers.tasks import is_transient, register_tasks, retry_later


@pytest.mark.parametrize(("exc", "transient"), [
    (OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
    (KombuOperationalError("Error 111 connecting"), True),
    (RedisConnectionError("Connection refused"), True),
    (ConnectionRefusedError(), True),
    (ValueError("bad input"), False),
    (Reject(KombuOperationalError("down"), requeue=False), False),
    (KeyError("x"), False),
])
def test_transient_failures(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_a_retry_the_broker_refuses_requeues_the_message_instead_of_dropping_it() -> None:
    app = Celery("t", set_as_current=False)

    @app.task(bind=True)
    def job(self: Any) -> None:
        retry_later(self, 2)

    def refuse(*_: Any, **__: Any) -> None:
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    job.apply_async = refuse  # what Task.retry publishes the copy with
    job.push_request(retries=0, id="t-1", called_directly=False)
    try:
        with pytest.raises(Reject) as rejected:
            job.run()
    finally:
        job.pop_request()
    assert rejected.value.requeue is True


def test_our_tasks_retry_without_limit() -> None:
    """retry(max_retries=None) alone means Celery's default of 3: a region without its lease for
    more than three retries (about 8 s) dead-lettered valid submissions (fault campaign, seed 23)."""
    app = Celery("t", set_as_current=False)
    register_tasks(app, object())  # type: ignore[arg-type]  # the runtime is used only when a task runs
    for name in (SUBMIT_TASK, REJECTED_TASK, RUN_STEP_TASK):
        task = app.tasks[name]
        assert task.max_retries is None, name
        task.apply_async = lambda *_, **__: None  # the copy "published"
        task.push_request(retries=50, id="t-2", called_directly=False)
        try:
            with pytest.raises(Retry):
                retry_later(task, 2)
        finally:
            task.pop_request()
