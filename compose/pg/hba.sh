#!/bin/sh
# pg_hba.conf of one region (printed; the container's command writes it before every start).
# TLS only. The superuser and the app role from the compose network; each link role
# rm_link_<peer>_from_<this region> only to the replicated database. Production: replace samenet
# with each peer's address (a /32), so a link's role is accepted only from its subscriber.
set -eu
me=$(echo "$REGIONMESH_REGION" | tr - _)
echo "local all postgres peer"
echo "hostssl all postgres samenet scram-sha-256"
echo "hostssl regionmesh regionmesh samenet scram-sha-256"
for peer in $REGIONMESH_PEERS; do
  echo "hostssl regionmesh rm_link_$(echo "$peer" | tr - _)_from_$me samenet scram-sha-256"
done
echo "host all all 0.0.0.0/0 reject"
echo "host all all ::/0 reject"
