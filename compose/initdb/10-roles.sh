#!/bin/sh
# Roles and database for one region (run once by the postgres image on an empty volume).
# The app role owns the schema and its subscriptions; the replication role may only
# replicate and read the published tables (granted by 'regionmesh replication setup').
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v app_pw="$REGIONMESH_DB_PASSWORD" -v repl_pw="$REGIONMESH_REPLICATION_PASSWORD" -v region="$REGIONMESH_REGION" <<'SQL'
CREATE ROLE regionmesh LOGIN PASSWORD :'app_pw';
CREATE ROLE rm_replicator LOGIN REPLICATION PASSWORD :'repl_pw';
GRANT pg_create_subscription TO regionmesh;
CREATE DATABASE regionmesh OWNER regionmesh;
ALTER DATABASE regionmesh SET regionmesh.region = :'region';
\connect regionmesh
GRANT EXECUTE ON FUNCTION pg_replication_origin_progress(text, boolean) TO regionmesh;
SQL
