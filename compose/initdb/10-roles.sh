#!/bin/sh
# Roles and database for one region (run once by the postgres image on an empty volume).
# The app role owns the schema and its subscriptions. Each peer that subscribes here gets its own
# replication role, rm_link_<peer>_from_<this region>, with its own secret (secrets/links/); no
# role but the superuser may create, drop, copy, advance or consume a slot through SQL. The
# passfile holds this region's outgoing link secrets for its subscriptions (see docs/explanation/security.md, "Security
# model": seal the subscriptions so the catalog holds no password).
set -eu
me=$(echo "$REGIONMESH_REGION" | tr - _)
links=""
for peer in $REGIONMESH_PEERS; do
  role="rm_link_$(echo "$peer" | tr - _)_from_$me"
  links="$links
CREATE ROLE $role LOGIN REPLICATION CONNECTION LIMIT 2 PASSWORD '$(cat "/var/lib/postgresql/links/$role")';"
done
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v app_pw="$REGIONMESH_DB_PASSWORD" -v region="$REGIONMESH_REGION" <<SQL
CREATE ROLE regionmesh LOGIN PASSWORD :'app_pw';
ALTER ROLE regionmesh SET log_min_error_statement = panic;
$links
GRANT pg_create_subscription TO regionmesh;
CREATE DATABASE regionmesh OWNER regionmesh;
ALTER DATABASE regionmesh SET regionmesh.region = :'region';
SQL
for db in regionmesh postgres template1; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$db" -q <<'SQL'
SELECT format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', p.oid::regprocedure) FROM pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname IN (
   'pg_create_logical_replication_slot', 'pg_create_physical_replication_slot', 'pg_drop_replication_slot',
   'pg_replication_slot_advance', 'pg_copy_logical_replication_slot', 'pg_copy_physical_replication_slot',
   'pg_logical_slot_get_changes', 'pg_logical_slot_peek_changes', 'pg_logical_slot_get_binary_changes',
   'pg_logical_slot_peek_binary_changes') \gexec
SQL
done
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname regionmesh \
  -c 'GRANT EXECUTE ON FUNCTION pg_replication_origin_progress(text, boolean) TO regionmesh'
umask 077
: > /var/lib/postgresql/regionmesh.pgpass
for peer in $REGIONMESH_PEERS; do
  role="rm_link_${me}_from_$(echo "$peer" | tr - _)"
  echo "pg-$peer:5432:regionmesh:$role:$(cat "/var/lib/postgresql/links/$role")" >> /var/lib/postgresql/regionmesh.pgpass
done
