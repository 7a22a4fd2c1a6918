-- 0009_manifest_credentials: what a manifest's credentials were sealed
-- from (the droplet's recipient, its slot, and the fleet-sealed
-- ciphertexts), so a manifest whose credentials did not change reuses the
-- previous manifest's per-droplet ciphertexts instead of opening and
-- sealing every credential again. NULL: unknown (sealed afresh next time).

ALTER TABLE manifests ADD COLUMN creds_hash sha256_digest;
