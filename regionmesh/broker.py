"""The broker adapter: every connection to a region's Redis, and the kombu internals we rely on.

Key layout (kombu's Redis transport, plus three keys of our own; nothing else touches them):

- ``<queue>``           a list per queue (``rm.<region>.submit``, ``rm.<region>.steps``); producers
                        LPUSH, consumers pop from the right (``POP_SCRIPT``).
- ``unacked``           hash: delivery tag -> ``[message, exchange, routing_key]``: delivered, not yet
                        acknowledged. Written by the same script that pops the message; removed by
                        the ack, or by a restore that puts the message back on its queue.
- ``unacked_index``     sorted set: delivery tag scored by delivery time; kombu's sweep gives back
                        entries older than the visibility timeout.
- ``rm.unacked_owner``  hash: delivery tag -> the consumer id that popped it (ours).
- ``rm.consumer.<id>``  a consumer's heartbeat, a string with a TTL (``CONSUMER_TTL_S``); a consumer
                        whose key is gone is dead, and any consumer gives its messages back (ours).
- ``rm.step_messages``  hash: step task id -> how many of its messages are queued or unacked (ours;
                        +1 with the LPUSH, -1 with the ack, in the same transaction).

The pop window is closed here. kombu 5.7 consumes with one multi-key BRPOP and writes ``unacked``
only after the reply reached Python: a main process stopped or killed in between took the message
with it, and no key remembered it. A blocking command cannot also record (BRPOP has no "and
store" form, BLMOVE takes one source list, a Lua script cannot block), so the consumer splits the
read in two:

1. the pop: ``POP_SCRIPT``, a non-blocking Lua script over every queue (kombu's round-robin order,
   higher priorities first), RPOPs one message and, in the same script, records it in ``unacked``,
   ``unacked_index`` and ``rm.unacked_owner``. Whatever happens to the process after Redis ran it,
   the message is in ``unacked``;
2. the wait, only when the pop found nothing: ``BLMOVE q q RIGHT RIGHT`` on each queue, each on its
   own connection: it blocks until that list is not empty and then moves the last element to the
   end of the same list, leaving the list as it was (a peek that blocks). Any wake-up, or the
   timeout (``brpop_timeout``, 1 s), sends the pop again. The wait watches each queue's base list;
   a message published with a priority (kombu's ``<queue>\x06\x16<n>`` lists) is found by the
   pop that follows the next wake-up or timeout.

Who owns a message, at each moment: its queue until the pop; from the pop, ``unacked`` (one owner,
kombu's). It leaves ``unacked`` only in one transaction with its fate: the ack deletes it, a
restore pushes it back on its queue (``QoS.restore_by_tag`` watches ``unacked``, so of two restorers
only one pushes). Restorers: the consumer itself (reject, close), the heartbeat sweep
(``sweep_dead_consumers``: the owner's key expired), the region's first worker at start
(``restore_orphaned``) and kombu's visibility sweep (older than ``visibility_timeout``). A consumer
only paused past its TTL may get a message back that it still runs: a second delivery, a no-op by
design (run ids and guarded claims).

A fairness layer with many queues (one per tenant) keeps this shape: its choice of the next message
goes into the pop script, and a wait on many lists becomes a wait on one wake key written by
whoever fills them.

What else each fact costs, and what covers it (docs/explanation/durability.md):

- A publish is on disk when Redis replies only with ``appendfsync always`` (the dev mesh and
  compose set it). With ``everysec`` Redis postpones writing the AOF while the previous fsync is
  still running (up to 2 s, "Asynchronous AOF fsync is taking too long") and replies meanwhile:
  a SIGKILL then loses publishes the producer was told succeeded.
- All consumers of a region must run this adapter: kombu's own channel still pops without
  recording, and acks without updating ``rm.step_messages``.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from functools import lru_cache
from queue import Empty
from time import monotonic
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from celery import Celery
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual
from kombu.utils.encoding import bytes_to_str as _bytes_to_str
from kombu.utils.json import dumps as _dumps
from kombu.utils.json import loads as _loads

from regionmesh.config import Settings
from regionmesh.log import event
from regionmesh.names import RUN_STEP_TASK

# kombu's helpers, typed.
bytes_to_str: Callable[[Any], str] = _bytes_to_str
dumps: Callable[[Any], str] = _dumps
loads: Callable[[Any], Any] = _loads

SOCKET_TIMEOUT_S = 10
# A forked pool process closes the Redis connections it inherited (kombu's after-fork cleanup); one
# left mid-BRPOP by the parent is read until a reply or SOCKET_TIMEOUT_S. Billiard kills a child
# that has not said it is up within worker_proc_alive_timeout (4 s by default), so with the default
# every replacement of a killed pool process could be killed again, forever: the fault campaign
# (seed 1) saw 122 in a row. The child must be given longer than the socket timeout.
PROC_ALIVE_TIMEOUT_S = SOCKET_TIMEOUT_S + 10


OWNER_KEY = "rm.unacked_owner"
CONSUMER_KEY = "rm.consumer.{}"
STEP_MESSAGES_KEY = "rm.step_messages"
CONSUMER_TTL_S = 30.0  # a consumer whose heartbeat is older than this is dead
BEAT_EVERY_S = 5.0  # well inside the TTL: a few missed beats (a busy event loop) are not death
SWEEP_EVERY_S = 10.0

# KEYS: unacked, unacked_index, rm.unacked_owner, then the lists to try, in order.
# ARGV: the delivery time (the consumer's clock, as kombu's own QoS.append writes it), consumer id.
# Returns {list, message, delivery tag}, {list, message} for a message kombu could not record
# either (no delivery tag: kombu's own path handles it as before), or false when every list is empty.
# The message is stored byte for byte; only the two strings around it are encoded here.
POP_SCRIPT = """
for i = 4, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, m = pcall(cjson.decode, item)
    local props = ok and type(m) == 'table' and m['properties']
    local info = type(props) == 'table' and props['delivery_info']
    local tag = type(props) == 'table' and props['delivery_tag']
    if type(info) == 'table' and type(tag) == 'string' and type(info['exchange']) == 'string'
        and type(info['routing_key']) == 'string' then
      redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ','
                 .. cjson.encode(info['routing_key']) .. ']')
      redis.call('ZADD', KEYS[2], ARGV[1], tag)
      redis.call('HSET', KEYS[3], tag, ARGV[2])
      return {KEYS[i], item, tag}
    end
    return {KEYS[i], item}
  end
end
return false
"""

# KEYS: rm.step_messages. ARGV: step task ids whose message was acknowledged. Never below zero:
# a count that is too low only makes the reconciler publish a message again (a no-op delivery).
FORGET_SCRIPT = """
for i = 1, #ARGV do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return #ARGV
"""


# KEYS: rm.unacked_owner, unacked, the consumer key prefix. Returns the tags held in ``unacked`` by
# consumers without a heartbeat; forgets owners of tags no longer held (one atomic look, so an
# owner written by a new pop of the same tag is never the one forgotten).
DEAD_SCRIPT = """
local owners = redis.call('HGETALL', KEYS[1])
local dead, alive = {}, {}
for i = 1, #owners, 2 do
  local tag, owner = owners[i], owners[i + 1]
  if redis.call('HEXISTS', KEYS[2], tag) == 0 then
    redis.call('HDEL', KEYS[1], tag)
  else
    if alive[owner] == nil then alive[owner] = redis.call('EXISTS', KEYS[3] .. owner) == 1 end
    if not alive[owner] then dead[#dead + 1] = tag end
  end
end
return dead
"""


def step_task_id(message: dict[str, Any]) -> str | None:
    """The step task id of a kombu message (as published or as delivered), or None for any other
    message. Decodes the body only of run_step messages. Pure."""
    headers = message.get("headers") or {}
    if headers.get("task") != RUN_STEP_TASK:
        return None
    kwargs = message_kwargs(message)
    task_id = kwargs.get("task_id") if kwargs else None
    return task_id if isinstance(task_id, str) else None


class RecordingQoS(kombu_redis.QoS):
    """kombu's ack emulation, for messages the pop script already recorded in ``unacked``.

    ``append`` skips kombu's second write of an entry the script wrote (same tag, same value);
    an ack also forgets the owner and lowers the step message count, in the ack's transaction.
    """

    channel: RecoveringChannel

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel.recorded_tag == delivery_tag:
            self.channel.recorded_tag = None
            virtual_qos_append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        self._settle(delivery_tag)
        kombu_virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            super().reject(delivery_tag, requeue=True)  # type: ignore[no-untyped-call]
            return
        self._settle(delivery_tag)
        kombu_virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def _settle(self, delivery_tag: str) -> None:
        """The message is done: out of ``unacked`` and of the step message count, in one transaction."""
        pipe = self._remove_from_indices(delivery_tag)
        message = self._delivered.get(delivery_tag)
        task_id = step_task_id(message._raw) if message is not None else None
        if task_id is not None:
            pipe.eval(FORGET_SCRIPT, 1, STEP_MESSAGES_KEY, task_id)
        pipe.execute()

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        pipe = super()._remove_from_indices(delivery_tag, pipe)  # type: ignore[no-untyped-call]
        return pipe.hdel(OWNER_KEY, delivery_tag)


def virtual_qos_append(qos: kombu_redis.QoS, message: Any, delivery_tag: str) -> None:
    """kombu's in-memory bookkeeping of a delivery, without its Redis write."""
    kombu_virtual.QoS.append(qos, message, delivery_tag)  # type: ignore[no-untyped-call]


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

    It also reads as the module docstring says: a recorded pop, a wait that takes nothing, a
    heartbeat, the sweep of dead consumers, and the count of step messages per task.
    """

    QoS = RecordingQoS

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self._opened_for = connection.client
        self.consumer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.recorded_tag: str | None = None
        self.pop_due = True  # False after a pop found nothing: wait until a list is not empty
        self.waits: dict[str, tuple[Any, float | None]] = {}  # list -> (its client, when the pending wait was sent)
        self._pop_sha: str | None = None
        self._beat_at = float("-inf")
        self._swept_at = float("-inf")
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

    # -- the read: a recorded pop, then a wait that takes nothing ---------------------------------

    def _brpop_start(self, timeout: Any = None) -> None:
        if not self.pop_due:
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._beat(force=False)
        kombu: Any = self  # kombu's own attributes are untyped
        keys = [kombu._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        kombu._in_poll = self.client.connection
        kombu._brpop_sent_at = monotonic()
        self.client.connection.send_command(
            "EVALSHA", self._pop_script_sha(), 3 + len(keys), self.unacked_key, self.unacked_index_key,
            OWNER_KEY, *keys, repr(time.time()), self.consumer_id)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVALSHA", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except self.ResponseError as exc:
                if "NOSCRIPT" not in str(exc):  # Redis restarted: load the script again
                    raise
                self._pop_sha = None
                raise Empty() from None
            if not reply:
                self.pop_due = False
                raise Empty()
            dest = bytes_to_str(reply[0]).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self.recorded_tag = bytes_to_str(reply[2]) if len(reply) > 2 else None
            self.connection._deliver(loads(bytes_to_str(reply[1])), dest)
            return True
        finally:
            kombu: Any = self
            kombu._in_poll = None
            kombu._flush_brpop_reauth()

    def _pop_script_sha(self) -> str:
        if self._pop_sha is None:
            with self.conn_or_acquire() as client:
                self._pop_sha = str(client.script_load(POP_SCRIPT))
        return self._pop_sha

    def start_waits(self, poller: kombu_redis.MultiChannelPoller) -> None:
        """Block on every queue (its own connection) until one is not empty; then pop again."""
        kombu: Any = self
        cycle: Any = poller
        for queue in self.active_queues:
            client, pending = self.waits.get(queue, (None, None))
            if pending is not None:
                continue
            kind = f"WAIT {queue}"
            if client is None:
                client = kombu._create_client(asynchronous=True)
                self.handlers[kind] = functools.partial(self._wait_read, queue)
            if not cycle._client_registered(self, client, kind):
                cycle._register(self, client, kind)
            client.connection.send_command("BLMOVE", queue, queue, "RIGHT", "RIGHT", self.brpop_timeout or 1)
            self.waits[queue] = (client, monotonic())

    def _wait_read(self, queue: str) -> None:
        client, _ = self.waits[queue]
        try:
            client.parse_response(client.connection, "BLMOVE")
        except self.connection_errors:
            client.connection.disconnect()
            raise
        finally:
            self.waits[queue] = (client, None)
            self.pop_due = True
        raise Empty()

    def _drop_stale_waits(self) -> None:
        """A live Redis answers a wait within its timeout; a half-open socket never does, and no
        socket timeout applies in the event loop (kombu checks its BRPOP connection the same way)."""
        overdue = (self.brpop_timeout or 1) + (self.health_check_interval or 25)
        for client, sent_at in list(self.waits.values()):
            if sent_at is not None and monotonic() - sent_at > overdue and client.connection is not None:
                event(logging.WARNING, "broker.wait_unanswered", waited_s=round(monotonic() - sent_at))
                client.connection.disconnect()

    def _on_connection_disconnect(self, connection: Any) -> None:
        for queue, (client, _) in list(self.waits.items()):
            if client.connection is connection:
                self.waits[queue] = (client, None)
                self.pop_due = True
        super()._on_connection_disconnect(connection)  # type: ignore[no-untyped-call]

    def _close_clients(self) -> None:
        super()._close_clients()  # type: ignore[no-untyped-call]
        for client, _ in self.waits.values():
            connection, client.connection = client.connection, None
            if connection is not None:
                connection.disconnect()
        self.waits.clear()

    # -- liveness: a heartbeat, and the messages of consumers without one --------------------------

    def maybe_refresh_binding_expiry(self) -> None:
        super().maybe_refresh_binding_expiry()  # type: ignore[no-untyped-call]
        if self.active_queues:  # only consumers hold messages
            self._drop_stale_waits()
            self._beat(force=False)
            now = monotonic()
            if now - self._swept_at >= SWEEP_EVERY_S:
                self._swept_at = now
                self.sweep_dead_consumers()

    def sweep_dead_consumers(self) -> int:
        """Put back on their queues the messages of consumers whose heartbeat expired. Any
        consumer may run it; ``restore_by_tag`` pushes each message once. Returns how many."""
        with self.conn_or_acquire() as client:
            tags = [bytes_to_str(t) for t in client.eval(DEAD_SCRIPT, 3, OWNER_KEY, self.unacked_key,
                                                           CONSUMER_KEY.format(""))]
            for tag in tags:
                self.qos.restore_by_tag(tag, client)
        if tags:
            event(logging.WARNING, "broker.restored_dead_consumer", count=len(tags))
        return len(tags)

    def _beat(self, *, force: bool) -> None:
        now = monotonic()
        if force or now - self._beat_at >= BEAT_EVERY_S:
            with self.conn_or_acquire() as client:
                client.set(CONSUMER_KEY.format(self.consumer_id), "1", px=int(CONSUMER_TTL_S * 1000))
            self._beat_at = now

    # -- publishing: count step messages with the LPUSH ------------------------------------------

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        task_id = step_task_id(message)
        if task_id is None:
            super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]
            return
        kwargs.pop("_publish_batch", None)  # the count and the message go together, now
        kombu: Any = self
        key = kombu._q_for_pri(queue, kombu._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, dumps(message))
            pipe.hincrby(STEP_MESSAGES_KEY, task_id, 1)
            pipe.execute()

    def _purge(self, queue: str) -> int:
        purged = int(super()._purge(queue))  # type: ignore[no-untyped-call]
        with self.conn_or_acquire() as client:
            client.delete(STEP_MESSAGES_KEY)  # counts too low only cost a message published again
        return purged


class RecordingPoller(kombu_redis.MultiChannelPoller):
    """kombu's poller, plus the waits of channels whose last pop found nothing."""

    def on_poll_start(self) -> None:
        super().on_poll_start()  # type: ignore[no-untyped-call]
        for channel in self._channels:
            if (isinstance(channel, RecoveringChannel) and channel.active_queues and not channel.pop_due
                    and channel.qos.can_consume()):
                channel.start_waits(self)

    def on_readable(self, fileno: int) -> Any:
        kind = self._fd_to_chan.get(fileno)
        if kind is not None and kind[1].startswith("WAIT "):
            # A wait's reply carries no message: read it even without credit (an unread socket
            # stays readable and spins the loop); the pop that follows waits for credit.
            return kind[0].handlers[kind[1]]()
        return super().on_readable(fileno)  # type: ignore[no-untyped-call]


class RecoveringTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`RecoveringChannel` (``broker_transport`` of every app)."""

    Channel = RecoveringChannel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.cycle = RecordingPoller()  # type: ignore[no-untyped-call,assignment]


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


def message_kwargs(raw: bytes | str | dict[str, Any]) -> dict[str, Any] | None:
    """The kwargs of one kombu message as the Redis transport stores it (a queue list element, or
    the first member of an ``unacked`` entry; or that message already parsed), or None when it is
    not a JSON Celery message. Pure."""
    try:
        item = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
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


def step_messages(app: Celery, task_ids: list[str]) -> set[str]:
    """Those of ``task_ids`` that still have a message in the broker: waiting in a queue or
    delivered and not yet acknowledged (``rm.step_messages``; one HMGET, whatever the backlog)."""
    if not task_ids:
        return set()
    with app.connection_for_write() as conn:
        counts = conn.default_channel.client.hmget(STEP_MESSAGES_KEY, task_ids)
    return {task_id for task_id, count in zip(task_ids, counts, strict=True) if count and int(count) > 0}


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
