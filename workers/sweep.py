"""Giving back messages that died with their worker.

Redis has no acks: a delivered message waits in kombu's ``unacked`` hash until
acked, and only after the visibility timeout (an hour here) does a live
worker put it back. When a worker of a region is ready and no other worker
of that region answers a ping, every message delivered before this worker
started belonged to a worker that is gone (killed, or its host lost), so it
goes back to its queue now. A message given back twice is harmless: run ids
and claims make redelivery a no-op.
"""

from __future__ import annotations

import logging

from celery import Celery
from regionmesh.workers.log import event


def others_alive(app: Celery, me: str, timeout: float = 1.0) -> int:
    """How many workers other than ``me`` on this broker answer a ping."""
    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:  # no answer is no one
        return 0
    return sum(1 for reply in replies for name in reply if name != me)


def restore_orphaned(app: Celery, region: str, delivered_before: float) -> int:
    """Put unacked messages delivered before ``delivered_before`` back on their queues."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        qos = channel.qos
        client = channel.client
        tags = client.zrange(qos.unacked_index_key, 0, delivered_before, byscore=True)
        for tag in tags:
            qos.restore_by_tag(tag, client)
    if tags:
        event(logging.WARNING, "broker.restored_unacked", region=region, count=len(tags))
    return len(tags)
