-- lease.sql: the right to work. A region creates, claims or completes work only
-- while rm_may_work() is true: no fence is up (local_fence: raised by an
-- operator, or while the region is failed over) and its lease keeper holds a
-- lease granted by a majority of the mesh (local_lease.held_until, converted to
-- this server's clock so that it ends no later than the keeper's own bound; see
-- workers/lease_keeper.py). Only this server's clock is read here, never a peer's.

CREATE OR REPLACE FUNCTION rm_may_work() RETURNS boolean LANGUAGE sql VOLATILE AS $$
  SELECT NOT EXISTS (SELECT 1 FROM local_fence WHERE fenced)
     AND EXISTS (SELECT 1 FROM local_lease WHERE id = 1 AND held_until > clock_timestamp())
$$;

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

-- Writers of placement facts (registry rows, region statuses) and rm_place_run
-- serialize on these advisory locks: a run is created either before a change
-- that moves its tenant away (and replicates ahead of it) or not at all.
CREATE OR REPLACE FUNCTION rm_lock_placement(p_tenant text, p_exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_tenant IS NULL THEN  -- a region status: every tenant's placement may change
    IF p_exclusive THEN PERFORM pg_advisory_xact_lock(hashtext('rm.placement'));
    ELSE PERFORM pg_advisory_xact_lock_shared(hashtext('rm.placement')); END IF;
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock_shared(hashtext('rm.placement'));
  IF p_exclusive THEN PERFORM pg_advisory_xact_lock(hashtext('rm.placement:' || p_tenant));
  ELSE PERFORM pg_advisory_xact_lock_shared(hashtext('rm.placement:' || p_tenant)); END IF;
END $$;
