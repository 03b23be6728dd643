"""The edges of data residency and erasure, on a three-region zoned mesh (zone eu = eu-west +
eu-central; us-east outside), plain connections, real PostgreSQL, Redis and ``celery worker``s.

- A message the worker's consumer refuses before Celery sees it (positional arguments, a ``self``
  keyword, canvas fields, another content type, a malformed header, invalid UTF-8, an unknown
  task) keeps no input of a zoned tenant outside its zone, and none of a message whose tenant it
  cannot tell: ``pg_dump`` of the region outside the zone holds no marker.
- Such a refusal names the tenant when the body names it (whatever was wrong with the message), so
  ``tenants erase`` finds and removes it; after the erasure a refusal keeps neither id nor input.
- The limit we keep (docs/explanation/security.md, "Data residency"): publications carry no ACL,
  so the link role of a region outside the zone can stream an in-zone destination's publication
  by name and read the zone's payload. The test shows exactly that edge.
"""

from __future__ import annotations

import hashlib
import json
import select
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from regionmesh.broker import broker_options
from regionmesh.client import submit
from regionmesh.config import MeshConfig
from regionmesh.models.admin import link_role
from regionmesh.models.engine import engine_for
from regionmesh.names import SUBMIT_TASK, submit_queue, zoned_publication
from regionmesh.ops.devmesh import DATABASE, HOST, DevMesh
from regionmesh.ops.residency import bind_zone
from regionmesh.replication.erasure import erase
from regionmesh.routing.hashing import home_by_hash
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import scalar, wait_until

REGIONS = ["eu-west", "eu-central", "us-east"]
EU = ["eu-west", "eu-central"]
OUTSIDE = "us-east"


class World:
    def __init__(self, dev: DevMesh, config: MeshConfig) -> None:
        self.dev = dev
        self.config = config
        self.engines: dict[str, Engine] = {r: engine_for(config, r) for r in REGIONS}

    def dump(self, region: str) -> str:
        """pg_dump of every table's data (replicated and local) in the region's database."""
        out = subprocess.run([str(self.dev.pg_bindir / "pg_dump"), "--data-only", "-d",
                              self.dev.admin_url(region, DATABASE)],
                             capture_output=True, text=True, timeout=120, check=True)
        return out.stdout

    def publish(self, region: str, body: bytes, headers: dict[str, Any], *,
                content_type: str = "application/json", encoding: str = "utf-8") -> None:
        """A raw message on ``region``'s submit queue, as any producer could send it."""
        url = self.config.regions[region].broker_url
        with Connection(url, transport_options=broker_options(self.config.settings)) as conn:
            conn.Producer().publish(body, routing_key=submit_queue(region), content_type=content_type,
                                    content_encoding=encoding, headers=headers, declare=[])

    def letters(self, region: str, task_ids: set[str]) -> dict[str, dict[str, Any]] | None:
        """task id -> dead letter in ``region``, once every one of ``task_ids`` has one."""
        with self.engines[region].connect() as conn:
            rows = conn.execute(text("SELECT * FROM dead_letters WHERE task_id = ANY(:t)"),
                                {"t": list(task_ids)}).mappings().all()
        found = {r["task_id"]: dict(r) for r in rows}
        return found if set(found) == task_ids else None


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = make_mesh_dir("rm-residency-edges-")
    dev = DevMesh(root)
    try:
        config = dev.up(REGIONS, workers=1, concurrency=1, zones={"eu": EU})
        w = World(dev, config)
        yield w
        for e in w.engines.values():
            e.dispose()
    finally:
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover, f"processes left behind: {leftover}"


def homed(region: str, prefix: str, *, zone: list[str] | None = None) -> str:
    """A tenant the whole mesh's hash places in ``region`` (and the zone's too, when given)."""
    return next(t for i in range(5000) if home_by_hash(t := f"{prefix}-{i}", REGIONS) == region
                and (zone is None or home_by_hash(t, zone) == region))


def bound(world: World, tenant: str) -> None:
    assert bind_zone(world.config, tenant, "eu", "eu-west")[0] == "eu-west"
    wait_until(lambda: all(scalar(e, "SELECT count(*) FROM tenant_zones WHERE tenant_id = :t", t=tenant)
                           for e in world.engines.values()), 30, f"the binding of {tenant} in every region")


def _kwargs(tenant: str, mark: str, sid: str) -> dict[str, Any]:
    return {"v": 1, "tenant_id": tenant, "workflow": "onboard", "input": {"email": f"{mark}@example.com"},
            "idempotency_key": sid, "submission_id": sid}


def refused_messages(tenant: str, mark: str) -> dict[str, tuple[bytes, dict[str, Any], str]]:
    """task id -> (body, headers, content type) of messages the consumer refuses, each holding
    ``mark`` in its input and naming ``tenant`` in its keyword arguments."""
    out: dict[str, tuple[bytes, dict[str, Any], str]] = {}
    no_canvas = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

    def add(name: str, args: Any, kwargs: dict[str, Any], embed: Any = None, *, task: str = SUBMIT_TASK,
            ctype: str = "application/json", raw: bytes | None = None, **headers: Any) -> None:
        tid = f"edge-{name}-{uuid.uuid4().hex[:8]}"
        body = raw if raw is not None else json.dumps([args, kwargs, no_canvas if embed is None else embed]).encode()
        out[tid] = (body, {"task": task, "id": tid, "lang": "py", **headers}, ctype)

    sid = lambda n: f"{n}-{uuid.uuid4().hex[:12]}"  # noqa: E731
    add("positional", [1], _kwargs(tenant, mark, sid("pos")))
    add("self", [], _kwargs(tenant, mark, sid("self")) | {"self": 1})
    add("canvas", [], _kwargs(tenant, mark, sid("canvas")),
        no_canvas | {"callbacks": [{"task": SUBMIT_TASK, "args": [], "kwargs": {"input": mark}}]})
    add("ctype", [], _kwargs(tenant, mark, sid("ctype")), ctype="application/data")
    add("header", [], _kwargs(tenant, mark, sid("header")), retries="many")
    add("task", [], _kwargs(tenant, mark, sid("task")), task="no.such.task")
    bad_utf8 = json.dumps([[], _kwargs(tenant, mark, sid("utf8")), no_canvas]).encode().replace(b"@", b"\xff@", 1)
    add("utf8", [], {}, raw=bad_utf8)
    return out


def test_refusals_outside_the_zone_keep_no_input_of_a_zoned_tenant(world: World) -> None:
    """Item 6 of issue 21: on the code before the fix each of these kept up to 64 KiB of the body
    (the input) in us-east's dead_letters."""
    mark = f"rmark{uuid.uuid4().hex[:12]}"
    zoned = homed("eu-west", "zrefuse", zone=EU)
    bound(world, zoned)
    messages = refused_messages(zoned, mark)
    # And one whose tenant nobody can tell (not JSON): its body is kept nowhere either.
    anon = f"edge-anon-{uuid.uuid4().hex[:8]}"
    messages[anon] = (f"not json {mark}".encode(), {"task": SUBMIT_TASK, "id": anon, "lang": "py"}, "application/json")
    for body, headers, ctype in messages.values():
        world.publish(OUTSIDE, body, headers, content_type=ctype)
    letters = wait_until(lambda: world.letters(OUTSIDE, set(messages)), 60, "a dead letter for every message")
    for tid, (body, _, _) in messages.items():
        letter = letters[tid]
        assert letter["payload"] is None, (tid, letter["reason"])
        assert letter["payload_size"] == len(body) and letter["payload_sha256"] == hashlib.sha256(body).hexdigest()
        assert letter["reason"] and mark not in letter["reason"]
        assert letter["tenant_id"] == (None if tid == anon else zoned), (tid, letter["tenant_id"])
    dump = world.dump(OUTSIDE)
    assert mark not in dump, f"an input of zone eu is in {OUTSIDE}'s database"
    assert zoned in dump  # the check can see what it looks for: the ids are metadata, kept


def test_a_refusal_names_its_tenant_so_erase_removes_it(world: World) -> None:
    """Item 6: a refusal for a bad header or content type kept the body with tenant_id NULL, so
    'tenants erase' never found it (on the code before the fix, the marker survives the erasure)."""
    mark = f"emark{uuid.uuid4().hex[:12]}"
    tenant = homed(OUTSIDE, "erefuse")  # unzoned: its refusals keep a body prefix where they land
    messages = refused_messages(tenant, mark)
    for body, headers, ctype in messages.values():
        world.publish(OUTSIDE, body, headers, content_type=ctype)
    letters = wait_until(lambda: world.letters(OUTSIDE, set(messages)), 60, "a dead letter for every message")
    for tid, letter in letters.items():
        assert letter["tenant_id"] == tenant, (tid, letter["reason"])
        assert letter["payload"], tid  # in zone, not erased: kept (base64 of the prefix for invalid UTF-8)
    assert mark in world.dump(OUTSIDE)

    result = erase(world.config, tenant, OUTSIDE)
    assert result.state == "erased" and sorted(result.confirmed) == sorted(REGIONS)
    assert mark not in world.dump(OUTSIDE), "a refusal of the erased tenant survived 'tenants erase'"

    # Refused after the erasure: neither the tenant's id nor its input is kept.
    again = refused_messages(tenant, mark)
    for body, headers, ctype in again.values():
        world.publish(OUTSIDE, body, headers, content_type=ctype)
    after = wait_until(lambda: world.letters(OUTSIDE, set(again)), 60, "a dead letter for every message")
    assert all(letter["tenant_id"] is None and letter["payload"] is None for letter in after.values()), after
    dump = world.dump(OUTSIDE)
    assert mark not in dump and tenant not in dump


# -- the limit we keep: a link role can stream any publication of the database it may reach ------

def _link_connection(world: World, subscriber: str, publisher: str) -> Any:
    """A walsender connection with the link's own role and secret. The role's CONNECTION LIMIT 2
    leaves one beside the subscription's; a connection just closed may hold it a moment longer."""
    role = link_role(subscriber, publisher)
    secret = (world.dev.root / "secrets" / "links" / role).read_text().strip()

    def connect() -> Any:
        try:
            return psycopg2.connect(host=HOST, port=int(world.dev.region(publisher).pg.port or 0), user=role,
                                    password=secret, dbname=DATABASE, connect_timeout=5,
                                    connection_factory=psycopg2.extras.LogicalReplicationConnection)
        except psycopg2.OperationalError as exc:
            if "too many connections" in str(exc):
                return None
            raise

    return wait_until(connect, 30, f"a walsender connection as {role}", interval=0.5)


def _admin(world: World, region: str, *statements: str) -> None:
    admin = psycopg2.connect(world.dev.admin_url(region, DATABASE))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        admin.close()


def _drop_slot(world: World, region: str, slot: str) -> None:
    admin = psycopg2.connect(world.dev.admin_url(region, DATABASE))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            def released() -> bool:
                cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
                row = cur.fetchone()
                return row is None or not row[0]

            wait_until(released, 30, f"slot {slot} released")
            cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                        (slot,))
    finally:
        admin.close()


def _stream_until(cur: Any, publication: str, slot: str, stop: bytes, timeout: float) -> bytes:
    """Everything the walsender sends for ``publication`` from ``slot``'s position (never
    confirmed, so each call starts there again) up to the change holding ``stop``."""
    cur.start_replication(slot_name=slot, decode=False,
                          options={"proto_version": "1", "publication_names": publication})
    seen = b""
    deadline = time.monotonic() + timeout
    while stop not in seen:
        assert time.monotonic() < deadline, f"{stop!r} never came through {publication}"
        msg = cur.read_message()
        if msg is None:
            select.select([cur], [], [], 0.5)
            continue
        seen += bytes(msg.payload)
    return seen


def test_an_out_of_zone_link_role_can_stream_an_in_zone_publication(world: World) -> None:
    """What the residency guarantee assumes: every region holding a link credential is honest.
    us-east's own link role on eu-west, from us-east's address, asks for rm_pub_to_eu_central
    instead of its own rm_pub_to_us_east and receives the zone's payload. PostgreSQL 16 has no
    privilege on publications ('There are currently no privileges on publications', logical
    replication, Security). If a way to close it is found, this test must show it refused."""
    zmark, omark = f"lzmark{uuid.uuid4().hex[:12]}", f"lomark{uuid.uuid4().hex[:12]}"
    zoned, unzoned = homed("eu-west", "zlink", zone=EU), homed("eu-west", "olink")
    bound(world, zoned)
    slot = f"rm_probe_{uuid.uuid4().hex[:8]}"
    _admin(world, "eu-west", "ALTER SYSTEM SET log_replication_commands = on", "SELECT pg_reload_conf()")
    conn = _link_connection(world, OUTSIDE, "eu-west")
    try:
        cur = conn.cursor()
        cur.create_replication_slot(slot, output_plugin="pgoutput")  # a walsender command: no GRANT controls it
    except BaseException:
        conn.close()
        raise
    try:
        zrun = submit(zoned, "onboard", {"email": f"{zmark}@example.com", "name": zmark}, region="eu-west",
                      config=world.config).run_id
        wait_until(lambda: scalar(world.engines["eu-west"], "SELECT status FROM workflow_runs WHERE id = :r",
                                  r=zrun) == "succeeded", 60, "the zoned run to finish in eu-west")
        # A later, unzoned run: every destination's publication carries it, after the zoned one.
        submit(unzoned, "onboard", {"email": f"{omark}@example.com", "name": omark}, region="eu-west",
               config=world.config)
        honest = _stream_until(cur, zoned_publication(OUTSIDE), slot, omark.encode(), 60)
        assert zmark.encode() not in honest  # its own publication filters the zone's rows out
        conn.close()
        conn = _link_connection(world, OUTSIDE, "eu-west")
        stolen = _stream_until(conn.cursor(), zoned_publication("eu-central"), slot, zmark.encode(), 60)
        assert zmark.encode() in stolen  # the limit: the zone's payload, streamed by an outsider's credential
    finally:
        conn.close()
        _drop_slot(world, "eu-west", slot)
        _admin(world, "eu-west", "ALTER SYSTEM RESET log_replication_commands", "SELECT pg_reload_conf()")
    # What an operator can watch for: the server logs every replication command with the
    # publications it names (log_replication_commands), so a link role asking for another
    # destination's publication shows.
    log = Path(str(world.dev.region("eu-west").pg.log)).read_text(encoding="utf-8", errors="replace")
    asked = [line for line in log.splitlines() if "START_REPLICATION" in line and slot in line]
    assert any(zoned_publication("eu-central") in line for line in asked), asked
