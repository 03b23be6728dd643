"""The Redis ACL files compose/make-secrets.sh writes, loaded by a real redis-server: each role can
do what it is for and no more; a producer cannot write kombu's binding set (issue 21 item 10: with
``%RW~_kombu.binding*`` a producer could add a binding that routes messages into the steps queue),
and the regionmesh client still publishes as that producer."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from regionmesh.client import submit
from regionmesh.config import parse_config
from regionmesh.names import steps_queue, submit_queue
from tests.support.helpers import wait_until

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
REGION = "us-east"
DENIED = redis.exceptions.NoPermissionError


class Server:
    def __init__(self, port: int, passwords: dict[str, str], acl: str) -> None:
        self.port = port
        self.passwords = passwords
        self.acl = acl

    def client(self, role: str) -> redis.Redis:
        user = "default" if role == "admin" else f"rm-{role}"
        return redis.Redis(host="127.0.0.1", port=self.port, username=user,
                           password=self.passwords[role.upper()], socket_timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if shutil.which("openssl") is None or shutil.which("redis-server") is None:
        pytest.fail("openssl and redis-server are needed (the compose secrets script and the server)")
    work = tmp_path_factory.mktemp("compose-secrets")
    shutil.copy(COMPOSE / "make-secrets.sh", work / "make-secrets.sh")
    subprocess.run(["sh", str(work / "make-secrets.sh")], cwd=work, check=True, capture_output=True, timeout=120)
    env = dict(line.split("=", 1) for line in (work / ".env").read_text().splitlines() if "=" in line)
    passwords = {role: env[f"REGIONMESH_REDIS_{role}_PASSWORD"] for role in ("ADMIN", "WORKER", "PRODUCER", "FLOWER")}
    acl = (work / "secrets" / "redis" / f"{REGION}.acl").read_text()
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(work),
                             "--aclfile", str(work / "secrets" / "redis" / f"{REGION}.acl")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = Server(port, passwords, acl)

    def answers() -> bool:
        try:
            return bool(srv.client("admin").ping())
        except redis.RedisError:
            return False

    try:
        wait_until(answers, 20, "redis-server with the compose ACL file to answer")
        yield srv
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_acl_file_holds_hashes_not_passwords(server: Server) -> None:
    assert not any(pw in server.acl for pw in server.passwords.values())
    assert server.acl.count(" #") == 4  # one SHA-256 per user


def test_a_producer_pushes_to_its_submit_queue_and_cannot_touch_bindings(server: Server) -> None:
    producer = server.client("producer")
    binding = f"_kombu.binding.{submit_queue(REGION)}"
    producer.lpush(submit_queue(REGION), b"{}")
    assert producer.smembers(binding) == set()  # reading the binding set is allowed
    for denied in (
        # Route the submit exchange into the steps queue, or add any binding at all.
        lambda: producer.sadd(binding, f"{submit_queue(REGION)}\x06\x16\x06\x16{steps_queue(REGION)}"),
        lambda: producer.sadd(f"_kombu.binding.{steps_queue(REGION)}", "x"),
        lambda: producer.srem(binding, "x"),
        lambda: producer.delete(binding),
        lambda: producer.lpush(steps_queue(REGION), b"{}"),
        lambda: producer.brpop([submit_queue(REGION)], timeout=1),
        lambda: producer.lpush(submit_queue("eu-west"), b"{}"),
        lambda: producer.hgetall("unacked"),
        lambda: producer.keys("*"),
    ):
        with pytest.raises(DENIED):
            denied()


def test_the_regionmesh_client_publishes_as_that_producer(server: Server) -> None:
    """kombu declares a queue (SADD on its binding set) before a default publish; the client
    publishes to the default exchange and declares nothing, so a read-only binding set suffices."""
    toml = f"""
[regions.{REGION}]
database_url = "postgresql://regionmesh@127.0.0.1:1/regionmesh"
broker_url = "redis://rm-producer@127.0.0.1:{server.port}/0"
broker_password = {{ env = "P" }}
peer_conninfo = "host=127.0.0.1 port=1 dbname=regionmesh"
"""
    cfg = parse_config(toml, environ={"P": server.passwords["PRODUCER"]}, region=REGION)
    admin = server.client("admin")
    before = admin.llen(submit_queue(REGION))
    receipt = submit("acl-tenant", "onboard", {"n": uuid.uuid4().hex}, region=REGION, config=cfg, resolve_home=False)
    assert admin.llen(submit_queue(REGION)) == before + 1
    assert receipt.submission_id.encode() in admin.lindex(submit_queue(REGION), 0)
    assert admin.exists(f"_kombu.binding.{submit_queue(REGION)}") == 0  # nothing declared


def test_workers_and_flower_keep_what_they_need(server: Server) -> None:
    worker, flower = server.client("worker"), server.client("flower")
    worker.sadd(f"_kombu.binding.{steps_queue(REGION)}", "x")  # a worker declares its queues
    worker.lpush(steps_queue(REGION), b"{}")
    assert worker.brpop([steps_queue(REGION)], timeout=1) is not None
    with pytest.raises(DENIED):
        worker.flushall()
    assert flower.llen(submit_queue(REGION)) >= 0
    for denied in (lambda: flower.lpush(submit_queue(REGION), b"{}"), lambda: flower.keys("*")):
        with pytest.raises(DENIED):
            denied()
