-- The server-settings statements of serve_app.storage.settings_repository (table app_settings: Enfugue's
-- `/api/settings` keys and the announcement snooze state). Each starts with a `-- name: <name>` line, then a
-- description. Values are jsonb; the pool's codec encodes and decodes Python values.

-- name: all_settings
-- Every stored setting.
SELECT key, value FROM app_settings ORDER BY key;

-- name: upsert_settings
-- Store each key of the jsonb object $1 (one statement: the whole update lands or none of it does).
INSERT INTO app_settings (key, value)
SELECT key, value FROM jsonb_each($1::jsonb)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now();
