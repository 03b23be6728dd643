"""The broker adapter: every connection to a region's Redis, and the kombu internals we rely on.

Key layout (kombu's Redis transport, as installed; we read it, never write our own keys):

- ``<queue>``           a list per queue (``rm.<region>.submit``, ``rm.<region>.steps``); LPUSH to
                        publish, BRPOP to consume.
- ``unacked``           hash: delivery tag -> the message and its queue, written right after the pop;
                        removed by the ack.
- ``unacked_index``     sorted set: delivery tag scored by delivery time; kombu's sweep gives back
                        entries older than the visibility timeout.

Redis has no acks: between the pop and the write to ``unacked`` the message lives only in the
consumer's memory, and a message held past the visibility timeout is delivered again. This module
owns those facts; nothing else touches Redis internals.

What each of those facts costs, and what covers it (docs/explanation/durability.md):

- A publish is on disk when Redis replies only with ``appendfsync always`` (the dev mesh and
  compose set it). With ``everysec`` Redis postpones writing the AOF while the previous fsync is
  still running (up to 2 s, "Asynchronous AOF fsync is taking too long") and replies meanwhile:
  a SIGKILL then loses publishes the producer was told succeeded.
- kombu 5.7's consumer pops with BRPOP (``Channel._brpop_read``), builds the message, and only then
  writes ``unacked`` (``QoS.append``: ZADD + HSET in one pipeline). A worker's main process
  SIGKILLed in between -- a window of a scheduling delay, long under CPU starvation -- takes the
  message with it, and no key in Redis remembers it. BRPOP over several keys has no atomic
  "pop into a backup list" form (BLMOVE takes one key), so the window is closed above Redis:
  step messages by the reconciler (PostgreSQL knows every queued task), forwarded submissions by
  the forwarder's outbox (kept until the run arrives), and producers' submissions by the
  producer's ``regionmesh.client.Journal``.
- Messages a dead worker had recorded in ``unacked`` go back when the region's next worker
  starts (``restore_orphaned``), not after the visibility timeout.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from celery import Celery
from kombu.transport import redis as kombu_redis

from regionmesh.config import Settings
from regionmesh.log import event

SOCKET_TIMEOUT_S = 10
# A forked pool process closes the Redis connections it inherited (kombu's after-fork cleanup); one
# left mid-BRPOP by the parent is read until a reply or SOCKET_TIMEOUT_S. Billiard kills a child
# that has not said it is up within worker_proc_alive_timeout (4 s by default), so with the default
# every replacement of a killed pool process could be killed again, forever: the fault campaign
# (seed 1) saw 122 in a row. The child must be given longer than the socket timeout.
PROC_ALIVE_TIMEOUT_S = SOCKET_TIMEOUT_S + 10


class RecoveringChannel(kombu_redis.Channel):
    """kombu's Redis channel, able to give its unacked messages back after Celery detached it.

    On a lost broker connection Celery 5.7's consumer first ``collect()``s the connection, which
    closes the default channel and then detaches the transport from its kombu Connection
    (``transport.client = None``), and then ``close()``s it again. A channel whose first close
    stopped on the dead socket (reading the reply of its pending BRPOP) is closed for real the
    second time, and giving its unacked messages back builds a Redis client from
    ``transport.client``: None. The AttributeError is not a connection error, so Celery does not
    catch it ("Unrecoverable error") and the worker's main process exits: the fault campaign
    (seed 21) lost eu-west's only worker to one Redis SIGKILL. This channel keeps the kombu
    Connection it was opened for and builds that client from it; with Redis back the messages go
    back at once, with Redis still down the restore fails as a connection error (Celery ignores
    it; the messages wait in ``unacked`` as a killed worker's do).
    """

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self._opened_for = connection.client
        super().__init__(connection, **kwargs)  # type: ignore[no-untyped-call]

    def _connparams(self, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is not None and transport.client is None and self._opened_for is not None:
            transport.client = self._opened_for
            try:
                return super()._connparams(asynchronous)  # type: ignore[no-untyped-call]
            finally:
                transport.client = None
        return super()._connparams(asynchronous)  # type: ignore[no-untyped-call]


class RecoveringTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`RecoveringChannel` (``broker_transport`` of every app)."""

    Channel = RecoveringChannel


TRANSPORT = f"{__name__}:RecoveringTransport"


def broker_options(settings: Settings) -> dict[str, Any]:
    """Transport options every connection to a region's broker uses (own and peers')."""
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": 5,
        "retry_on_timeout": True,
        "health_check_interval": 25,
    }


def connection_settings(broker_url: str, settings: Settings) -> dict[str, Any]:
    """Celery settings for a connection to ``broker_url`` (TLS verified when the URL is ``rediss://``)."""
    conf: dict[str, Any] = {
        "broker_url": broker_url,
        "broker_transport": TRANSPORT,
        "broker_transport_options": broker_options(settings),
    }
    if broker_url.startswith("rediss://"):
        conf["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        # The mesh file's ca_file travels in the URL (config adds it); Celery's broker_use_ssl
        # would otherwise replace the URL's TLS options.
        ca = parse_qs(urlsplit(broker_url).query).get("ssl_ca_certs")
        if ca:
            conf["broker_use_ssl"]["ssl_ca_certs"] = ca[0]
    return conf


@lru_cache(maxsize=32)
def publisher(broker_url: str, settings: Settings) -> Celery:
    """A publishing-only Celery app for one broker (cached; JSON only, bounded timeouts)."""
    app = Celery("regionmesh-producer", set_as_current=False)
    app.conf.update(
        connection_settings(broker_url, settings),
        task_serializer="json",
        accept_content=["json"],
        broker_connection_timeout=5,
        broker_connection_max_retries=3,
    )
    return app


def others_alive(app: Celery, me: str, timeout: float = 1.0) -> int:
    """How many workers other than ``me`` on this broker answer a ping."""
    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:  # no answer is no one
        return 0
    return sum(1 for reply in replies for name in reply if name != me)


def restore_orphaned(app: Celery, region: str, delivered_before: float) -> int:
    """Put unacked messages delivered before ``delivered_before`` back on their queues.

    Called when a region's first worker is ready and no other worker answers: every message
    delivered before it started belonged to a worker that is gone, so it goes back now rather
    than after the visibility timeout. Giving one back twice is harmless: run ids and claims
    make a redelivery a no-op.
    """
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


def message_kwargs(raw: bytes | str) -> dict[str, Any] | None:
    """The kwargs of one kombu message as the Redis transport stores it (a queue list element, or
    the first member of an ``unacked`` entry), or None when it is not a JSON Celery message. Pure."""
    try:
        item = json.loads(raw)
        if isinstance(item, list):  # unacked: [message, exchange, routing_key]
            item = item[0]
        body = item["body"]
        if item.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
        kwargs = decoded[1] if isinstance(decoded, list) and len(decoded) >= 2 else None
        return kwargs if isinstance(kwargs, dict) else None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def waiting_step_tasks(app: Celery, queue: str) -> set[str]:
    """Step task ids that still have a message in the broker: waiting in ``queue`` or delivered and
    not yet acknowledged (a prefetched or countdown message sits in ``unacked``)."""
    found: set[str] = set()
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        raws = list(client.lrange(queue, 0, -1)) + list(client.hvals(channel.qos.unacked_key))
    for raw in raws:
        kwargs = message_kwargs(raw)
        if kwargs and isinstance(kwargs.get("task_id"), str):
            found.add(kwargs["task_id"])
    return found


class QueueGauge:
    """What a region's metrics read of its Redis: the length of each queue's list and of the
    ``unacked`` hash (the key layout above), over one client with short timeouts."""

    def __init__(self, broker_url: str) -> None:
        self.client = redis.Redis.from_url(broker_url, socket_timeout=3, socket_connect_timeout=3)

    def depths(self, queues: list[str]) -> dict[str, int]:
        """Messages waiting per queue. Raises redis' error if the broker does not answer."""
        return {q: int(self.client.llen(q)) for q in queues}

    def unacked(self) -> int:
        """Messages delivered to workers and not yet acknowledged."""
        return int(self.client.hlen("unacked"))
