-- The Enfugue model-preset statements of serve_app.storage.preset_repository (table model_presets). Each starts
-- with a `-- name: <name>` line, then a description. Every value is a bound parameter; lora, lycoris, inversion
-- and config are jsonb (the pool's codec encodes Python values).
--
-- The columns of a preset, $1..$17 of insert_preset and (shifted by one) replace_preset:
-- name, checkpoint, size, prompt, negative_prompt, refiner, refiner_size, inpainter, inpainter_size, scheduler,
-- vae, refiner_vae, inpainter_vae, lora, lycoris, inversion, config.

-- name: all_presets
-- Every preset, by name.
SELECT * FROM model_presets ORDER BY name;

-- name: preset_source
-- Every preset: the source that rest_query_sql.fetch_page wraps as `(...) AS q` for `GET /api/models`.
SELECT * FROM model_presets

-- name: get_preset
-- One preset by name.
SELECT * FROM model_presets WHERE name = $1;

-- name: insert_preset
-- A new preset; no row back when the name is taken.
INSERT INTO model_presets (
    name, checkpoint, size, prompt, negative_prompt, refiner, refiner_size, inpainter, inpainter_size, scheduler,
    vae, refiner_vae, inpainter_vae, lora, lycoris, inversion, config
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15::jsonb, $16::jsonb, $17::jsonb)
ON CONFLICT (name) DO NOTHING
RETURNING *;

-- name: replace_preset
-- Overwrite preset $1 with the columns $2..$18 (which may rename it); no row back when there is no preset $1.
-- A rename onto another preset's name raises a unique violation.
UPDATE model_presets
SET name = $2, checkpoint = $3, size = $4, prompt = $5, negative_prompt = $6, refiner = $7, refiner_size = $8,
    inpainter = $9, inpainter_size = $10, scheduler = $11, vae = $12, refiner_vae = $13, inpainter_vae = $14,
    lora = $15::jsonb, lycoris = $16::jsonb, inversion = $17::jsonb, config = $18::jsonb, updated_at = now()
WHERE name = $1
RETURNING *;

-- name: delete_preset
-- Remove a preset; its name back, or no row when there was none.
DELETE FROM model_presets WHERE name = $1 RETURNING name;
