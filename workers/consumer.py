"""A Celery consumer that records malformed messages in dead_letters before dropping them.

Celery already refuses them (pickle, unknown task names, undecodable bodies)
and keeps serving; this makes the refusal visible to operators.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from celery.worker.consumer import Consumer

from regionmesh.workers.tasks import dead_letter


def _record(app: Any, reason: str, message: Any, body: Any = None) -> None:
    rt = getattr(app, "rm", None)
    if rt is None:
        return
    try:

        headers = getattr(message, "headers", None) or {}
        raw = body if body is not None else getattr(message, "body", b"")
        if isinstance(raw, bytes | bytearray):
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            if not text or "\x00" in text:  # binary (pickle): PostgreSQL text cannot hold it as is
                text = "base64:" + base64.b64encode(bytes(raw)).decode("ascii")
        else:
            text = repr(raw)
        dead_letter(rt, headers.get("task"), reason, text[:65536])
    except Exception:  # recording must never stop the consumer
        logging.getLogger("regionmesh").exception("could not record a dead letter: %s", reason)


class DeadLetterConsumer(Consumer):  # type: ignore[misc]
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _record(self.app, f"undecodable message ({message.content_type}): {exc}", message)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _record(self.app, "message is not a Celery task message", message, body)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        _record(self.app, f"unknown task: {exc}", message, body)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _record(self.app, f"invalid task message: {exc}", message, body)
        super().on_invalid_task(body, message, exc)
