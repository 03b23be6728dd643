"""The worker's consumer: every delivered message is classified before Celery sees it.

Celery's main process decodes a task message's body and reads its headers in its strategy; a
body that is not an ``[args, kwargs, embed]`` triple (``5``, ``null``, a string), another content
type, invalid UTF-8 or a malformed header raises there and stops the worker, and the restored
message then stops the restarted one too. So ``on_task_received`` is wrapped:
``intake.classify`` decides on the raw message, and a refused message is dead-lettered (size,
SHA-256, content type, task id, submission id, the tenant its body names, and a bounded body
prefix where residency allows: ``tasks.residency_scrub``, the same rule as the task path's) and
acked without reaching Celery. Celery's own refusal callbacks are replaced too: they log the
body, which carries input.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

from regionmesh.log import event
from regionmesh.names import SUBMIT_TASK
from regionmesh.workers.intake import Rejection, as_bytes, classify, dead_letter_record, tenant_hint
from regionmesh.workers.submission import kwargs_summary
from regionmesh.workers.tasks import BODY_SHA256_HEADER, BODY_SIZE_HEADER, dead_letter, residency_scrub

logger = logging.getLogger("regionmesh")
RETRY_RECORD_S = 1.0


class DeadLetterConsumer(Consumer):  # type: ignore[misc]
    def on_connection_error_after_connected(self, exc: Exception) -> None:
        # Closing the lost connection tries to give this worker's unacked messages back; with the
        # broker still down that fails and they would wait for the visibility timeout (an hour).
        # Note when, so the reconciler gives back what was delivered before then (restore_after_loss).
        runtime = getattr(self.app, "rm", None)
        if runtime is not None:
            runtime.broker_lost_at = time.time()
        super().on_connection_error_after_connected(exc)

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], Any]:
        celery_handler = super().create_task_handler(promise)
        known = frozenset(name for name in self.app.tasks if not name.startswith("celery."))
        passthrough = tuple(self.connection_errors) + tuple(self.channel_errors)

        def on_task_received(message: Any) -> Any:
            verdict = classify(message.body, message.content_type, message.content_encoding, message.headers,
                               known_tasks=known)
            if isinstance(verdict, Rejection):
                return self._refuse(message, verdict)
            raw = as_bytes(message.body)
            message.headers[BODY_SIZE_HEADER] = len(raw)
            message.headers[BODY_SHA256_HEADER] = hashlib.sha256(raw).hexdigest()
            if verdict.task == SUBMIT_TASK:
                # Whatever the producer put there, Flower and the logs see who and what, never the input.
                message.headers["argsrepr"] = "()"
                message.headers["kwargsrepr"] = kwargs_summary(verdict.kwargs)
            try:
                return celery_handler(message)
            except passthrough:
                raise
            except Exception as exc:  # classify let through something Celery still cannot take
                return self._refuse(message, Rejection(f"Celery refused the message ({type(exc).__name__})",
                                                       verdict.task, verdict.task_id, verdict.submission_id))

        return on_task_received

    def _refuse(self, message: Any, verdict: Rejection) -> None:
        """Record a refused message, then ack it; if it cannot be recorded, give it back shortly.

        The tenant is read from the body whatever the refusal (a bad header or content type stops
        ``classify`` before it reads the body), so ``tenants erase`` and the zone scrub find the
        record; the body is kept only where residency allows it (``tasks.residency_scrub``)."""
        raw = as_bytes(getattr(message, "body", b""))
        hint = tenant_hint(raw)
        tenant, certain = (hint.tenant_id, hint.certain) if hint.tenant_id else (verdict.tenant_id, False)
        record = dead_letter_record(raw, reason=verdict.reason, task_name=verdict.task, task_id=verdict.task_id,
                                    submission_id=verdict.submission_id, tenant_id=tenant,
                                    content_type=getattr(message, "content_type", None))
        rt = getattr(self.app, "rm", None)
        try:
            if rt is None:
                raise RuntimeError("no regionmesh runtime on this app")
            record = residency_scrub(rt, record, certain=certain)  # reads the zone and erasure facts
            dead_letter(rt, record)
        except Exception as exc:  # the database is away: keep the message, never drop it unrecorded
            event(logging.ERROR, "message.dead_letter_failed", task=record.task_name, task_id=record.task_id,
                  size=record.payload_size, sha256=record.payload_sha256, error=type(exc).__name__)
            self.timer.call_after(RETRY_RECORD_S, message.reject_log_error,
                                  (logger, self.connection_errors), {"requeue": True})
            return
        message.ack_log_error(logger, self.connection_errors)

    # Celery's own refusal paths (reached only if classify let a message through): the same
    # record, without Celery's log lines that dump the body.
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._refuse(message, _from_headers(message, f"undecodable message ({type(exc).__name__})"))

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._refuse(message, _from_headers(message, "message is not a Celery task message"))

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._refuse(message, _from_headers(message, "unknown task name"))

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._refuse(message, _from_headers(message, f"invalid task message ({type(exc).__name__})"))


def _from_headers(message: Any, reason: str) -> Rejection:
    headers = getattr(message, "headers", None)
    headers = headers if isinstance(headers, dict) else {}
    task, task_id = headers.get("task"), headers.get("id")
    return Rejection(reason, task if isinstance(task, str) else None, task_id if isinstance(task_id, str) else None)
