-- API key lineage: who created each key. created_by_type is the kind of
-- creator (user: a UI session; api_key: a key created at run time, whose id
-- is parent_key_id; configured_key: a key of the configuration). Revoking a
-- key may also revoke the keys it minted, following parent_key_id. Keys
-- created before this migration have an empty type.
ALTER TABLE api_keys {{.OnCluster}} ADD COLUMN IF NOT EXISTS created_by_type LowCardinality(String) DEFAULT '' AFTER created_by;
ALTER TABLE api_keys {{.OnCluster}} ADD COLUMN IF NOT EXISTS parent_key_id String DEFAULT '' AFTER created_by_type;
