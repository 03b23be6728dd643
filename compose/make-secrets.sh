#!/bin/sh
# Makes everything the compose deployment needs that must not be in version control:
#   compose/secrets/tls/     a throwaway CA and server certificates for pg-<region> and redis-<region>
#   compose/secrets/links/   one secret per replication link role rm_link_<subscriber>_from_<publisher>
#   compose/.env             the passwords docker compose passes to the containers
#   compose/secrets/redis/   each region's Redis ACL file: its users with SHA-256 hashes of their
#                            passwords (no password in clear), written from .env
# Everything is created with mode 0600 (certificates 0644); an existing file is never overwritten
# (the ACL files are derived from .env: delete them after changing a Redis password there).
set -eu
cd "$(dirname "$0")"
umask 077
REGIONS="us-east eu-west ap-south"
mkdir -p secrets/tls secrets/links
rand() { openssl rand -base64 32 | tr -d '/+=\n' | cut -c1-32; }
if [ ! -f secrets/tls/ca.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -subj "/O=regionmesh compose/CN=regionmesh compose CA" -keyout secrets/tls/ca.key -out secrets/tls/ca.crt 2>/dev/null
  for r in $REGIONS; do
    for host in "pg-$r" "redis-$r"; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$host" \
        -keyout "secrets/tls/$host.key" -out "secrets/tls/$host.csr" 2>/dev/null
      printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$host" > "secrets/tls/$host.ext"
      openssl x509 -req -in "secrets/tls/$host.csr" -CA secrets/tls/ca.crt -CAkey secrets/tls/ca.key \
        -CAcreateserial -days 365 -extfile "secrets/tls/$host.ext" -out "secrets/tls/$host.crt" 2>/dev/null
      rm -f "secrets/tls/$host.csr" "secrets/tls/$host.ext"
    done
  done
  rm -f secrets/tls/ca.srl
  chmod 0644 secrets/tls/*.crt
  # Each container's root copies what its server user needs; the CA key stays out of every container.
  mv secrets/tls/ca.key secrets/ca.key
fi
for sub in $REGIONS; do
  for pub in $REGIONS; do
    [ "$sub" = "$pub" ] && continue
    f="secrets/links/rm_link_$(echo "$sub" | tr - _)_from_$(echo "$pub" | tr - _)"
    [ -f "$f" ] || rand > "$f"
  done
done
if [ ! -f .env ]; then
  {
    echo "PG_SUPERUSER_PASSWORD=$(rand)"
    echo "REGIONMESH_DB_PASSWORD=$(rand)"
    for role in ADMIN WORKER PRODUCER FLOWER; do echo "REGIONMESH_REDIS_${role}_PASSWORD=$(rand)"; done
    echo "FLOWER_BASIC_AUTH=admin:$(rand)"
  } > .env
fi
# Each region's Redis reads only its own ACL file (a compose secret). Producers may push to their
# region's submit queue and read kombu's binding set, never write it: a producer that could add a
# binding could route a message into any queue (the steps queue included). The regionmesh client
# publishes to the default exchange with the queue as routing key, which needs no binding at all.
REDIS_ADMIN=$(sed -n 's/^REGIONMESH_REDIS_ADMIN_PASSWORD=//p' .env)
REDIS_WORKER=$(sed -n 's/^REGIONMESH_REDIS_WORKER_PASSWORD=//p' .env)
REDIS_PRODUCER=$(sed -n 's/^REGIONMESH_REDIS_PRODUCER_PASSWORD=//p' .env)
REDIS_FLOWER=$(sed -n 's/^REGIONMESH_REDIS_FLOWER_PASSWORD=//p' .env)
hash() { printf '%s' "$1" | openssl dgst -sha256 -r | cut -d' ' -f1; }
mkdir -p secrets/redis
for r in $REGIONS; do
  f="secrets/redis/$r.acl"
  [ -f "$f" ] && continue
  {
    echo "user default on #$(hash "$REDIS_ADMIN") ~* &* +@all"
    echo "user rm-worker on #$(hash "$REDIS_WORKER") ~* &* +@all -@dangerous +info"
    echo "user rm-producer on #$(hash "$REDIS_PRODUCER") resetchannels -@all +ping +lpush +llen +smembers +multi +exec +discard ~rm.$r.submit* %R~_kombu.binding*"
    echo "user rm-flower on #$(hash "$REDIS_FLOWER") resetchannels &* %R~* %RW~_kombu.binding* -@all +@read +@connection +subscribe +psubscribe +unsubscribe +punsubscribe +publish +sadd +srem +zadd +zrem +exists +del +time +multi +exec +discard +eval +evalsha +script|load +script|exists -keys"
  } > "$f"
done
echo "compose/secrets/ and compose/.env are ready (keep them out of version control)"
