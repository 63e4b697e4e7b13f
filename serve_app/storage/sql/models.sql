-- The model registry statements of serve_app.storage.model_registry: models, their relationships,
-- per-replica cache stats and server-wide model settings. Each starts with a `-- name: <name>` line,
-- then a description. Every value is a bound parameter.
--
-- Records travel in and out as the columns of `models`; inserts take them as a jsonb array of
-- objects keyed by column name (jsonb_populate_recordset), so one statement inserts one or many.

-- name: insert_models
-- Insert the records of $1 (a jsonb array); a unique violation aborts the statement.
INSERT INTO models (
    key, name, base, type, format, path, hash, file_size, source, source_type, description,
    source_api_response, has_cover_image, trigger_phrases, default_settings, variant, prediction_type,
    upcast_attention, config_path, repo_variant, converted_at, submodels, usage_info
)
SELECT key, name, base, type, format, path, hash, file_size, source, source_type, description,
       source_api_response, has_cover_image, trigger_phrases, default_settings, variant, prediction_type,
       upcast_attention, config_path, repo_variant, converted_at, submodels, usage_info
FROM jsonb_populate_recordset(NULL::models, $1::jsonb)
RETURNING *;

-- name: insert_missing_models
-- Insert the records of $1 whose key, path and (name, base, type) are all free; skip the others.
-- Sorted by key so replicas scanning the same folder at once take row locks in the same order.
INSERT INTO models (
    key, name, base, type, format, path, hash, file_size, source, source_type, description,
    source_api_response, has_cover_image, trigger_phrases, default_settings, variant, prediction_type,
    upcast_attention, config_path, repo_variant, converted_at, submodels, usage_info
)
SELECT key, name, base, type, format, path, hash, file_size, source, source_type, description,
       source_api_response, has_cover_image, trigger_phrases, default_settings, variant, prediction_type,
       upcast_attention, config_path, repo_variant, converted_at, submodels, usage_info
FROM jsonb_populate_recordset(NULL::models, $1::jsonb)
ORDER BY key
ON CONFLICT DO NOTHING
RETURNING key;

-- name: find_models
-- Models matching every non-NULL filter: $1 bases (text[]; NULL or empty: any), $2 type, $3 name,
-- $4 format.
SELECT *
FROM models
WHERE (cardinality(coalesce($1::text[], '{}')) = 0 OR base = ANY ($1))
  AND ($2::text IS NULL OR type = $2)
  AND ($3::text IS NULL OR name = $3)
  AND ($4::text IS NULL OR format = $4)
ORDER BY name, base, type;

-- name: get_model
-- One model by key.
SELECT * FROM models WHERE key = $1;

-- name: get_models
-- The models among the keys of $1.
SELECT * FROM models WHERE key = ANY ($1::text[]);

-- name: lock_model
-- One model by key, locked until the transaction ends (read, change in Python, write back).
SELECT * FROM models WHERE key = $1 FOR UPDATE;

-- name: model_by_path
-- The model registered at path $1.
SELECT * FROM models WHERE path = $1;

-- name: update_model
-- Overwrite every column of model $1 (its key may change: $2) with the values of record $3 (jsonb).
UPDATE models
SET (
    key, name, base, type, format, path, hash, file_size, source, source_type, description,
    source_api_response, has_cover_image, trigger_phrases, default_settings, variant, prediction_type,
    upcast_attention, config_path, repo_variant, converted_at, submodels, usage_info, updated_at
) = (
    SELECT $2, name, base, type, format, path, hash, file_size, source, source_type, description,
           source_api_response, has_cover_image, trigger_phrases, default_settings, variant, prediction_type,
           upcast_attention, config_path, repo_variant, converted_at, submodels, usage_info, now()
    FROM jsonb_populate_record(NULL::models, $3::jsonb)
)
WHERE key = $1
RETURNING *;

-- name: delete_model
-- Delete model $1 (its relationships cascade); returns the row.
DELETE FROM models WHERE key = $1 RETURNING *;

-- name: related_keys
-- The keys related to any key of $1, sorted, without duplicates.
SELECT model_key_2 AS key FROM model_relationships WHERE model_key_1 = ANY ($1::text[])
UNION
SELECT model_key_1 FROM model_relationships WHERE model_key_2 = ANY ($1::text[])
ORDER BY key;

-- name: take_relationships
-- Delete the relationships of model $1 and return the other keys (a key change re-adds them, since the
-- smaller key must come first).
DELETE FROM model_relationships
WHERE model_key_1 = $1 OR model_key_2 = $1
RETURNING CASE WHEN model_key_1 = $1 THEN model_key_2 ELSE model_key_1 END AS key;

-- name: insert_relationship
-- Relate $1 and $2 (any order); returns nothing when the pair already exists.
INSERT INTO model_relationships (model_key_1, model_key_2)
VALUES (least($1::text, $2::text), greatest($1::text, $2::text))
ON CONFLICT DO NOTHING
RETURNING model_key_1;

-- name: delete_relationship
-- Unrelate $1 and $2 (any order); returns nothing when there was no such relationship.
DELETE FROM model_relationships
WHERE model_key_1 = least($1::text, $2::text) AND model_key_2 = greatest($1::text, $2::text)
RETURNING model_key_1;

-- name: report_cache_stats
-- Upsert replica $1's cache stats $2 (jsonb), stamped now.
INSERT INTO model_cache_stats (replica_id, stats, updated_at)
VALUES ($1, $2::jsonb, now())
ON CONFLICT (replica_id) DO UPDATE SET stats = EXCLUDED.stats, updated_at = EXCLUDED.updated_at;

-- name: remove_cache_stats
-- Drop replica $1's row.
DELETE FROM model_cache_stats WHERE replica_id = $1;

-- name: live_cache_stats
-- The stats of the replicas that reported within the last $1 seconds, by replica id.
SELECT stats
FROM model_cache_stats
WHERE updated_at >= now() - make_interval(secs => $1::double precision)
ORDER BY replica_id;

-- name: get_setting
-- One setting's value.
SELECT value FROM model_settings WHERE name = $1;

-- name: set_setting
-- Upsert one setting.
INSERT INTO model_settings (name, value, updated_at)
VALUES ($1, $2, now())
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at;

-- name: delete_setting
-- Remove one setting (a missing one is not an error).
DELETE FROM model_settings WHERE name = $1;
