"""The broker channel every regionmesh app uses gives a worker's unacked messages back even when
Celery closes it after detaching its transport (Celery 5.7's handling of a lost broker connection:
``collect()``, then ``close()``); kombu's own channel raised AttributeError there, which took the
worker's main process down ("Unrecoverable error": fault campaign, seed 21). Real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from regionmesh.broker import TRANSPORT
from regionmesh.supervisor import free_port
from tests.support.helpers import wait_until

QUEUE = Queue("rm.test.steps", Exchange("rm.test.steps"), "rm.test.steps")


@pytest.fixture()
def redis_url() -> Iterator[str]:
    folder, port = tempfile.mkdtemp(prefix="rm-redis-"), free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    try:
        wait_until(listening, 10, "redis-server to listen")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def held_message(url: str, transport: Any) -> tuple[Connection, Any]:
    """A connection whose consumer holds one delivered, unacknowledged message."""
    with Connection(url) as producer_conn:
        producer_conn.Producer().publish({"step": "a"}, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key,
                                         declare=[QUEUE])
    conn = Connection(url, transport=transport)
    got: list[Any] = []
    conn.Consumer([QUEUE], callbacks=[lambda body, message: got.append(message)], no_ack=False).consume()
    conn.drain_events(timeout=5)
    assert len(got) == 1
    return conn, got[0].channel


def test_a_channel_closed_after_its_transport_was_detached_gives_its_message_back(redis_url: str) -> None:
    conn, channel = held_message(redis_url, TRANSPORT)
    client = redis.Redis.from_url(redis_url)
    assert client.llen(QUEUE.name) == 0 and client.hlen("unacked") == 1
    conn.transport.client = None  # what Connection.collect() leaves behind
    channel.close()  # kombu's own channel: AttributeError ('NoneType' object has no attribute 'hostname')
    assert client.llen(QUEUE.name) == 1 and client.hlen("unacked") == 0


def test_kombus_own_channel_fails_there(redis_url: str) -> None:
    """The failure the channel above exists for, shown on kombu's channel (if kombu fixes it, this
    test fails and RecoveringChannel can go)."""
    conn, channel = held_message(redis_url, None)
    conn.transport.client = None
    with pytest.raises(AttributeError, match="hostname"):
        channel.close()


# -- the pop window (issue 21, item 12) ----------------------------------------------------------

OTHER = Queue("rm.test.submit", Exchange("rm.test.submit"), "rm.test.submit")


def publish(url: str, queue: Queue, body: Any, **kwargs: Any) -> None:
    with Connection(url, transport=TRANSPORT) as producer_conn:
        producer_conn.Producer().publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                                         declare=[queue], serializer="json", **kwargs)


OPEN: list[Connection] = []


@pytest.fixture(autouse=True)
def close_consumers(redis_url: str) -> Iterator[None]:
    """Consumers are closed while their Redis still runs (kombu gives back what they hold)."""
    yield
    while OPEN:
        OPEN.pop().close()


def consumer(url: str, transport: Any, got: list[Any]) -> tuple[Connection, Any]:
    conn = Connection(url, transport=transport)
    OPEN.append(conn)
    c = conn.Consumer([QUEUE, OTHER], callbacks=[lambda body, message: got.append(message)], no_ack=False)
    c.consume()
    return conn, c.channel


def pop_and_die(conn: Connection, channel: Any) -> None:
    """Send the consumer's read and never look at the reply: a main process stopped (or killed)
    the moment Redis answered."""
    conn.transport.cycle._register_BRPOP(channel)


def test_a_pop_records_the_message_before_the_consumer_sees_it(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    conn, channel = consumer(redis_url, TRANSPORT, [])
    publish(redis_url, QUEUE, {"step": "a"})
    pop_and_die(conn, channel)
    wait_until(lambda: client.llen(QUEUE.name) == 0, 5, "Redis to hand the message out")
    assert client.hlen("unacked") == 1 and client.zcard("unacked_index") == 1
    (tag,) = client.hkeys("unacked")
    assert client.hget("rm.unacked_owner", tag) == channel.consumer_id.encode()


def test_kombus_own_channel_leaves_a_popped_message_nowhere(redis_url: str) -> None:
    """The hole, shown on kombu's channel (if kombu closes it, this test fails)."""
    client = redis.Redis.from_url(redis_url)
    conn, channel = consumer(redis_url, None, [])
    publish(redis_url, QUEUE, {"step": "a"})
    pop_and_die(conn, channel)
    wait_until(lambda: client.llen(QUEUE.name) == 0, 5, "Redis to hand the message out")
    assert client.hlen("unacked") == 0


def test_a_dead_consumers_messages_go_back_and_a_live_ones_stay(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    dead_conn, dead = consumer(redis_url, TRANSPORT, [])
    publish(redis_url, QUEUE, {"step": "dead"})
    pop_and_die(dead_conn, dead)
    wait_until(lambda: client.hlen("unacked") == 1, 5, "the first consumer to hold a message")
    (dead_tag,) = client.hkeys("unacked")
    got: list[Any] = []
    live_conn, live = consumer(redis_url, TRANSPORT, got)
    publish(redis_url, OTHER, {"step": "live"})
    live_conn.drain_events(timeout=5)
    assert [m.payload for m in got] == [{"step": "live"}]
    assert client.hlen("unacked") == 2

    assert live.sweep_dead_consumers() == 0, "both consumers beat: nothing is given back"
    client.delete(f"rm.consumer.{dead.consumer_id}")  # its TTL ran out
    assert live.sweep_dead_consumers() == 1
    assert client.llen(QUEUE.name) == 1 and client.hlen("unacked") == 1
    assert live.sweep_dead_consumers() == 0, "given back once"
    live.qos.restore_by_tag(dead_tag)  # kombu's visibility sweep, late, for the same tag
    assert client.llen(QUEUE.name) == 1, "kombu's restore and the heartbeat sweep gave it back twice"
    got[0].ack()
    assert client.hlen("unacked") == 0 and client.hlen("rm.unacked_owner") == 0


def test_a_waiting_consumer_wakes_for_either_queue_and_takes_nothing_while_waiting(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    got: list[Any] = []
    conn, channel = consumer(redis_url, TRANSPORT, got)
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.3)  # both queues empty: the pop found nothing, it waits on both
    assert not channel.pop_due and all(sent is not None for _, sent in channel.waits.values())
    blocked = [c["cmd"] for c in client.client_list() if "b" in c.get("flags", "")]
    assert sorted(blocked) == ["blmove", "blmove"], blocked
    for queue in (OTHER, QUEUE):
        publish(redis_url, queue, {"to": queue.name})
        assert client.llen(queue.name) == 1, "the wait took the message"
        started = time.monotonic()
        conn.drain_events(timeout=5)
        assert time.monotonic() - started < 0.5, "woken by the wait, not by its timeout"
        assert got[-1].payload == {"to": queue.name}
        got[-1].ack()
    assert client.hlen("unacked") == 0 and client.llen(QUEUE.name) == client.llen(OTHER.name) == 0


def test_step_messages_are_counted_from_publish_to_ack(redis_url: str) -> None:
    from celery import Celery

    from regionmesh.broker import step_messages
    from regionmesh.names import RUN_STEP_TASK

    client = redis.Redis.from_url(redis_url)
    app = Celery("t", set_as_current=False)
    app.conf.update(broker_url=redis_url, broker_transport=TRANSPORT)
    for task_id in ("t1", "t1", "t2"):
        publish(redis_url, QUEUE, [[], {"task_id": task_id}, {}], headers={"task": RUN_STEP_TASK})
    publish(redis_url, QUEUE, [[], {"task_id": "t3"}, {}], headers={"task": "something.else"})
    assert step_messages(app, ["t1", "t2", "t3", "t4"]) == {"t1", "t2"}
    got: list[Any] = []
    conn, _ = consumer(redis_url, TRANSPORT, got)
    while len(got) < 4:
        conn.drain_events(timeout=5)
    assert step_messages(app, ["t1", "t2"]) == {"t1", "t2"}, "delivered, not acknowledged: still there"
    by_task: dict[str, list[Any]] = {}
    for m in got:
        by_task.setdefault(m.payload[1]["task_id"], []).append(m)
    by_task["t1"][0].ack()
    by_task["t2"][0].ack()
    assert step_messages(app, ["t1", "t2"]) == {"t1"}, "one of t1's two messages is left"
    by_task["t1"][1].reject(requeue=True)  # back on its queue: still there
    assert step_messages(app, ["t1"]) == {"t1"} and client.hget("rm.step_messages", "t1") == b"1"
    by_task["t3"][0].reject(requeue=False)  # not a step message: nothing counted, nothing to forget
    assert client.hkeys("rm.step_messages") == [b"t1"]


def test_a_wait_unanswered_past_its_timeout_is_dropped_and_the_consumer_reads_again(redis_url: str) -> None:
    """A half-open socket never answers and no socket timeout applies in the event loop: a wait
    overdue by the health check interval is disconnected, and the next read starts over."""
    got: list[Any] = []
    conn, channel = consumer(redis_url, TRANSPORT, got)
    with pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.3)
    queue = sorted(channel.waits)[0]
    client, sent_at = channel.waits[queue]
    assert sent_at is not None
    channel.waits[queue] = (client, sent_at - 3600)  # as if sent an hour ago and never answered
    channel._drop_stale_waits()
    assert channel.pop_due and channel.waits[queue][1] is None
    publish(redis_url, QUEUE, {"after": "drop"})
    conn.drain_events(timeout=5)
    assert got[-1].payload == {"after": "drop"}
