"""Redis access by role on the TLS mesh: producers may only publish to their region's submit
queue, Flower may read queues and events but write no queue, nobody but the admin may flush or
reconfigure."""

from __future__ import annotations

import uuid

import pytest
import redis

from regionmesh.client import submit
from regionmesh.config import load_config
from regionmesh.models import runs as runs_repo
from regionmesh.models.engine import engine_for
from regionmesh.names import steps_queue, submit_queue
from regionmesh.ops.demo import DemoResult
from regionmesh.supervisor import wait_for
from tests.conftest import Mesh

DENIED = redis.exceptions.NoPermissionError


def _client(mesh: Mesh, role: str, region: str) -> redis.Redis:
    url = load_config(str(mesh.dev.role_mesh_file(role)), region=region).regions[region].broker_url
    assert url.startswith(f"rediss://rm-{role}:"), f"{role}.toml does not name the rm-{role} user"
    return redis.Redis.from_url(url, socket_timeout=5)


def test_a_producer_publishes_to_submit_queues_only(tls_mesh: Mesh, demo_on_tls: DemoResult) -> None:
    region = "eu-west"
    producer_cfg = load_config(str(tls_mesh.dev.role_mesh_file("producer")), region=region)
    # What a producer is for works: the submission is executed.
    key = f"acl-{uuid.uuid4().hex[:8]}"
    receipt = submit("acl-tenant", "etl", {"n": 2}, key, region=region, config=producer_cfg, resolve_home=False)
    engine = engine_for(tls_mesh.config, region)
    try:
        wait_for(lambda: runs_repo.statuses(engine, [receipt.run_id]).get(receipt.run_id, ("",))[0] == "succeeded",
                 60, "the producer's run to complete")
    finally:
        engine.dispose()
    client = _client(tls_mesh, "producer", region)
    try:
        assert client.ping()
        client.lpush(submit_queue(region), b"{}")  # allowed (a bad body is dead-lettered by the worker)
        for denied in (
            lambda: client.lrange(steps_queue(region), 0, -1),  # read the steps queue
            lambda: client.lpush(steps_queue(region), b"{}"),  # bypass submission
            lambda: client.brpop([submit_queue(region)], timeout=1),  # take others' submissions
            lambda: client.lrange(submit_queue(region), 0, -1),
            lambda: client.hgetall("unacked"),
            lambda: client.lpush(submit_queue("us-east"), b"{}"),  # another region's queue
            # A binding routing the submit exchange into the steps queue (kombu's binding sets are read-only).
            lambda: client.sadd(f"_kombu.binding.{submit_queue(region)}",
                                f"{submit_queue(region)}\x06\x16\x06\x16{steps_queue(region)}"),
            lambda: client.srem(f"_kombu.binding.{submit_queue(region)}", "x"),
            lambda: client.flushall(),
            lambda: client.config_get("*"),
            lambda: client.keys("*"),
            lambda: client.publish("/0.celery.pidbox", b"{}"),
        ):
            with pytest.raises(DENIED):
                denied()
    finally:
        client.close()


def test_workers_cannot_flush_or_reconfigure(tls_mesh: Mesh) -> None:
    client = _client(tls_mesh, "worker", "us-east")
    try:
        assert client.ping()
        for denied in (lambda: client.flushall(), lambda: client.flushdb(), lambda: client.config_set("appendonly", "no"),
                       lambda: client.keys("*"), lambda: client.shutdown(nosave=True)):
            with pytest.raises(DENIED):
                denied()
    finally:
        client.close()


def test_flower_reads_but_writes_no_queue(tls_mesh: Mesh) -> None:
    client = _client(tls_mesh, "flower", "us-east")
    try:
        assert client.llen(steps_queue("us-east")) >= 0
        for denied in (lambda: client.lpush(steps_queue("us-east"), b"{}"), lambda: client.rpop(steps_queue("us-east")),
                       lambda: client.hdel("unacked", "x"), lambda: client.flushall(), lambda: client.keys("*"),
                       lambda: client.set("x", "1"), lambda: client.config_get("*")):
            with pytest.raises(DENIED):
                denied()
    finally:
        client.close()


def test_the_default_user_is_off(tls_mesh: Mesh) -> None:
    region = "us-east"
    port = int(tls_mesh.dev.region(region).redis.port or 0)
    secret = (tls_mesh.dev.root / "secrets" / "redis").read_text().strip()
    client = redis.Redis(host="127.0.0.1", port=port, password=secret, ssl=True, ssl_cert_reqs="required",
                         ssl_ca_certs=str(tls_mesh.dev.ca_file()), socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.ping()
    client.close()
