"""``regionmesh replication setup``: the publication in every region and a subscription
from every region to every peer. Converges on the mesh file: each subscription's actual
connection, publication, options, slot and enabled state are compared with what they
should be and every difference is repaired and reported; rerunning changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from regionmesh.config import MeshConfig
from regionmesh.errors import ConfigError
from regionmesh.models import link_health, publishing, replicated_tables, subscribing
from regionmesh.models.admin import link_role
from regionmesh.models.engine import engine_for
from regionmesh.models.tables import ZONED_TABLES
from regionmesh.names import PUBLICATION, subscription_name
from regionmesh.replication import publications
from regionmesh.routing.membership import seed_from_file, wait_everywhere, with_mesh_zones


@dataclass(frozen=True)
class Link:
    subscriber: str
    publisher: str
    subscription: str
    result: str


def conninfo(config: MeshConfig, publisher: str, subscriber: str | None = None) -> str:
    """How subscribers reach ``publisher``: its peer conninfo, the replication role (``subscriber``'s
    own link role when the mesh file names link secrets), its sslmode."""
    role = link_role(subscriber, publisher) if subscriber else None
    link_password = config.link_password(role) if role else None
    if role and link_password:
        user, secret = role, link_password
    elif not config.replication_password:
        raise ConfigError(
            config.path, "mesh.replication_password", "missing",
            'add replication_password = { env = "REGIONMESH_REPLICATION_PASSWORD" } under [mesh]',
        )
    else:
        user, secret = config.replication_user, config.replication_password
    region = config.regions[publisher]
    password = secret.replace("\\", "\\\\").replace("'", "\\'")
    parts = [region.peer_conninfo, f"user={user}", f"password='{password}'"]
    if "sslmode=" not in region.peer_conninfo:
        parts.append(f"sslmode={region.sslmode}")
    return " ".join(parts)


def _with_switch(result: str) -> str:
    what = "publication -> per destination"
    return f"{result}; {what}" if result.startswith("updated") else f"updated: {what}"


def setup(config: MeshConfig, regions: list[str] | None = None, *, timeout: float = 60.0) -> list[Link]:
    """Publications everywhere first (a subscription needs its publisher's), then subscriptions
    between the given regions (default: all). Each link's ``result`` says what was repaired.

    Subscriptions made before the per-destination payload publications existed are switched
    onto them (replication/publications.py); raises SwitchTimeout if one does not confirm its
    publisher's position within ``timeout``.

    Refuses to wire a region that holds no subscriptions into a mesh that has
    them: it has none of the mesh's data, and copy_data = false would never
    bring it; 'regionmesh region add' joins such a region.
    """
    names = regions or list(config.regions)
    file_config, config = config, with_mesh_zones(config)  # payload filters follow the zones the mesh holds
    engines = {n: engine_for(config, n) for n in config.regions}
    try:
        pending = publications.unswitched(engines, config.regions)
        added, marks = publications.publish_all(config, engines, config.regions, pending)
        published = {n: publishing.publication_tables(engines[n], PUBLICATION) for n in config.regions}
        has_subs = {n: bool(link_health.subscriptions(engines[n])) for n in names}
        if any(has_subs.values()):
            new = sorted(n for n, has in has_subs.items() if not has)
            if new:
                raise ConfigError(
                    config.path, f"regions.{new[0]}", "region is not part of the replicated mesh yet",
                    f"run 'regionmesh region add {new[0]}' to copy the mesh's data into it and subscribe it",
                )
        links = []
        for sub in names:
            for pub in names:
                if sub == pub:
                    continue
                sname = subscription_name(sub, pub)
                wanted = (PUBLICATION if (sub, pub) in pending
                          else publications.publications_for(config, engines[pub], sub))
                zoned = list(ZONED_TABLES) if replicated_tables.payload_zoned(engines[pub]) else []
                result = subscribing.ensure_subscription(engines[sub], sname, conninfo(config, pub, sub), wanted,
                                                         published[pub] + zoned)
                if added.get(pub):  # a table the publisher had stopped publishing, or a new one
                    note = f"{pub} publishes {', '.join(added[pub])} again"
                    result = note if result == "unchanged" else f"{result}; {note}"
                links.append(Link(sub, pub, sname, result))
        if pending:  # subscriptions made before the per-destination publications: switched now
            publications.switch(config, engines, pending, marks, timeout=timeout)
            switched = {subscription_name(s, p) for s, p in pending}
            links = [lk if lk.subscription not in switched else
                     Link(lk.subscriber, lk.publisher, lk.subscription, _with_switch(lk.result)) for lk in links]
        if seed_from_file(file_config, {n: engines[n] for n in names}):  # now the seed replicates everywhere
            wait_everywhere({n: engines[n] for n in names}, file_config.zones, timeout)
        return links
    finally:
        for engine in engines.values():
            engine.dispose()
