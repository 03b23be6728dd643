#!/bin/sh
# Starts one region's Redis as the redis user. Compose mounts this container's own secrets only
# (its TLS key and certificate, the CA certificate, its ACL file) as files the host's root owns
# with mode 0600; root copies them for the redis user, then hands over to the image's entrypoint,
# which starts redis-server through 'gosu redis' (it drops privileges only when its first
# argument is redis-server: a command of 'sh -c ... redis-server ...' would keep root).
# TLS only (port 0); the users and their password hashes come from the ACL file, so no password
# is on a command line or in this container's environment but the admin's (the healthcheck's).
set -eu
install -d -m 0700 -o redis -g redis /run/redis-secrets
for f in server.key server.crt ca.crt users.acl; do
  install -m 0600 -o redis -g redis "/run/secrets/$f" "/run/redis-secrets/$f"
done
exec docker-entrypoint.sh redis-server --appendonly yes --appendfsync always --maxmemory-policy noeviction \
  --port 0 --tls-port 6380 --tls-cert-file /run/redis-secrets/server.crt \
  --tls-key-file /run/redis-secrets/server.key --tls-ca-cert-file /run/redis-secrets/ca.crt \
  --tls-auth-clients no --aclfile /run/redis-secrets/users.acl
