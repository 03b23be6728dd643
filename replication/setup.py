"""``regionmesh replication setup``: the publication in every region and a subscription
from every region to every peer. Converges on the mesh file: each subscription's actual
connection, publication, options, slot and enabled state are compared with what they
should be and every difference is repaired and reported; rerunning changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from regionmesh.config import MeshConfig
from regionmesh.errors import ConfigError
from regionmesh.models import replication as repl
from regionmesh.models.admin import link_role
from regionmesh.models.engine import engine_for
from regionmesh.models.tables import ZONED_TABLES
from regionmesh.names import PUBLICATION, subscription_name, subscription_publications, zoned_publication


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


def setup(config: MeshConfig, regions: list[str] | None = None) -> list[Link]:
    """Publications everywhere first (a subscription needs its publisher's), then subscriptions
    between the given regions (default: all). Each link's ``result`` says what was repaired.

    Refuses to wire a region that holds no subscriptions into a mesh that has
    them: it has none of the mesh's data, and copy_data = false would never
    bring it; 'regionmesh region add' joins such a region.
    """
    names = regions or list(config.regions)
    engines = {n: engine_for(config, n) for n in config.regions}
    try:
        published: dict[str, list[str]] = {}
        for name in config.regions:
            repl.ensure_publication(engines[name], PUBLICATION, config.replication_user)
            published[name] = repl.publication_tables(engines[name], PUBLICATION)
            for dest in config.regions:  # payloads: per destination, filtered to its zone (residency)
                if dest != name:
                    zone = config.zone_of(dest)
                    repl.ensure_zoned_publication(engines[name], zoned_publication(dest), [zone] if zone else [],
                                                  config.replication_user)
        has_subs = {n: bool(repl.subscriptions(engines[n])) for n in names}
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
                result = repl.ensure_subscription(engines[sub], sname, conninfo(config, pub, sub),
                                                   subscription_publications(sub),
                                                   published[pub] + list(ZONED_TABLES))
                links.append(Link(sub, pub, sname, result))
        return links
    finally:
        for engine in engines.values():
            engine.dispose()
