-- 0023: zone membership is a replicated, versioned fact (issue 21, item 11). Every process read the
-- mesh file's [zones] once, when it started, so a zone added to a running mesh was unknown to the
-- running workers: a tenant bound to it was "held" by them (its submissions retried every 2 s,
-- with no log line), and nothing told them, since rm_placement_version did not cover the zone's
-- regions. The zones table holds each zone's regions (written by 'regionmesh zones set', seeded
-- from the mesh file in one region once the regions replicate: replication setup, or migrate on a
-- replicating mesh; a zone with no regions is removed); placement reads it with the
-- tenant's binding, and rm_placement_version appends ':' and the zone row's epoch to the binding's
-- epoch once the row was changed (epoch > 1), so a run is created only from the membership it was
-- placed with. Unzoned tenants, and tenants of zones never changed since they were first written
-- (seeded from a mesh file, or set once), keep the version they had: workers of the previous
-- release go on creating their runs. After a zone's regions change (refused while tenants are
-- bound to it, so this concerns zones whose tenants are bound later), previous-release workers get
-- 'moved' for its tenants until they are rolled.
-- Downgrade: rm_placement_version as of 0022 comes back by revision; the table is dropped.

CREATE TABLE zones (
    name text NOT NULL,
    regions text[] NOT NULL,
    epoch bigint DEFAULT 1 NOT NULL,
    updated_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    origin_region text NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT pk_zones PRIMARY KEY (name)
);

CREATE OR REPLACE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON zones FOR EACH ROW EXECUTE FUNCTION rm_stamp();
SELECT rm_install_conflict_triggers('zones'::regclass);
SELECT rm_install_delete_rules('zones'::regclass);

DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'rm_pub') THEN
    ALTER PUBLICATION rm_pub ADD TABLE zones;
  END IF;
END $$;

-- What a tenant's placement is computed from, as this region's copy holds it:
-- the tenant's registry epoch (0 without a row), every region's status and
-- epoch, its zone binding's epoch (with ':' and the epoch of its zone's row in
-- zones once that row was changed, epoch > 1: a zone's regions changed while
-- workers run change the version of its tenants only; a zone's first row needs
-- no mark, since a worker without it places nothing: the tenant is held) and
-- its erasure receipt's epoch (keyed by the SHA-256 of the tenant id).
-- rm_place_run creates a run only while this is what the worker saw
-- (routing/placement.py version() spells the same text).
CREATE OR REPLACE FUNCTION rm_placement_version(p_tenant text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT epoch::text FROM tenant_registry WHERE tenant_id = p_tenant), '0') || '/' ||
         coalesce((SELECT string_agg(name || '=' || status || '@' || epoch, ',' ORDER BY name COLLATE "C") FROM regions), '')
         || '/' || coalesce((SELECT t.epoch::text || coalesce(':' || nullif(z.epoch, 1)::text, '')
                               FROM tenant_zones t LEFT JOIN zones z ON z.name = t.zone AND z.deleted_at IS NULL
                              WHERE t.tenant_id = p_tenant AND t.deleted_at IS NULL), '0')
         || '/' || coalesce((SELECT epoch::text FROM tenant_erasures
                              WHERE tenant_hash = encode(sha256(convert_to(p_tenant, 'UTF8')), 'hex')), '0')
$$;
