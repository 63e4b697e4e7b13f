-- The install and download job statements of serve_app.storage.model_job_store. Each starts with a
-- `-- name: <name>` line, then a description. Every value is a bound parameter.
--
-- Updates take one jsonb parameter holding only the fields to change (`$2 ? 'field'`), so one static
-- statement serves every partial update; a JSON null sets a nullable column to NULL. A finished job's status
-- is final: an update that sets `status` on a job already completed, errored or cancelled matches no row
-- (the caller then reads the job as it is). That is what makes a cancel from another replica stick even when
-- the worker finishes at the same moment.

-- name: insert_install
-- A new install job; the id comes from the identity column.
INSERT INTO model_install_jobs (
    status, source, inplace, config_in, config_out_key, local_path, bytes, total_bytes, source_metadata,
    error_reason, error, error_traceback
)
VALUES ($1, $2::jsonb, $3, $4::jsonb, $5, $6, $7, $8, $9::jsonb, $10, $11, $12)
RETURNING *;

-- name: get_install
-- One install job.
SELECT * FROM model_install_jobs WHERE id = $1;

-- name: list_installs
-- Every install job, oldest first.
SELECT * FROM model_install_jobs ORDER BY id;

-- name: update_install
-- Set the fields present in $2 (see the header); no row when the job is missing or its status is final.
UPDATE model_install_jobs
SET status = CASE WHEN $2::jsonb ? 'status' THEN $2::jsonb ->> 'status' ELSE status END,
    source = CASE WHEN $2::jsonb ? 'source' THEN $2::jsonb -> 'source' ELSE source END,
    inplace = CASE WHEN $2::jsonb ? 'inplace' THEN ($2::jsonb ->> 'inplace')::boolean ELSE inplace END,
    config_in = CASE WHEN $2::jsonb ? 'config_in' THEN $2::jsonb -> 'config_in' ELSE config_in END,
    config_out_key = CASE WHEN $2::jsonb ? 'config_out_key' THEN $2::jsonb ->> 'config_out_key' ELSE config_out_key END,
    local_path = CASE WHEN $2::jsonb ? 'local_path' THEN $2::jsonb ->> 'local_path' ELSE local_path END,
    bytes = CASE WHEN $2::jsonb ? 'bytes' THEN ($2::jsonb ->> 'bytes')::bigint ELSE bytes END,
    total_bytes = CASE WHEN $2::jsonb ? 'total_bytes' THEN ($2::jsonb ->> 'total_bytes')::bigint ELSE total_bytes END,
    source_metadata = CASE
        WHEN $2::jsonb ? 'source_metadata' THEN nullif($2::jsonb -> 'source_metadata', 'null'::jsonb)
        ELSE source_metadata
    END,
    error_reason = CASE WHEN $2::jsonb ? 'error_reason' THEN $2::jsonb ->> 'error_reason' ELSE error_reason END,
    error = CASE WHEN $2::jsonb ? 'error' THEN $2::jsonb ->> 'error' ELSE error END,
    error_traceback = CASE
        WHEN $2::jsonb ? 'error_traceback' THEN $2::jsonb ->> 'error_traceback'
        ELSE error_traceback
    END,
    updated_at = now()
WHERE id = $1
  AND NOT ($2::jsonb ? 'status' AND status IN ('completed', 'error', 'cancelled'))
RETURNING *;

-- name: prune_installs
-- Delete finished installs (their download parts go with them: ON DELETE CASCADE); return how many.
WITH pruned AS (
    DELETE FROM model_install_jobs
    WHERE status IN ('completed', 'error', 'cancelled')
    RETURNING 1
)
SELECT count(*) FROM pruned;

-- name: parts_of_installs
-- The download parts of the installs in $1 (bigint[]), oldest first.
SELECT * FROM download_jobs WHERE install_job_id = ANY($1::bigint[]) ORDER BY id;

-- name: insert_download
-- A new download job; the id comes from the identity column.
INSERT INTO download_jobs (
    install_job_id, source, dest, download_path, status, bytes, total_bytes, priority, error_type, error,
    content_type, sha256, kind, owner, job_started, job_ended
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
RETURNING *;

-- name: get_download
-- One download job.
SELECT * FROM download_jobs WHERE id = $1;

-- name: list_downloads
-- Downloads, oldest first; $1 owner and $2 install job id filter when not NULL.
SELECT *
FROM download_jobs
WHERE ($1::text IS NULL OR owner = $1)
  AND ($2::bigint IS NULL OR install_job_id = $2)
ORDER BY id;

-- name: update_download
-- Set the fields present in $2 (see the header); no row when the job is missing or its status is final.
UPDATE download_jobs
SET status = CASE WHEN $2::jsonb ? 'status' THEN $2::jsonb ->> 'status' ELSE status END,
    source = CASE WHEN $2::jsonb ? 'source' THEN $2::jsonb ->> 'source' ELSE source END,
    dest = CASE WHEN $2::jsonb ? 'dest' THEN $2::jsonb ->> 'dest' ELSE dest END,
    download_path = CASE WHEN $2::jsonb ? 'download_path' THEN $2::jsonb ->> 'download_path' ELSE download_path END,
    bytes = CASE WHEN $2::jsonb ? 'bytes' THEN ($2::jsonb ->> 'bytes')::bigint ELSE bytes END,
    total_bytes = CASE WHEN $2::jsonb ? 'total_bytes' THEN ($2::jsonb ->> 'total_bytes')::bigint ELSE total_bytes END,
    priority = CASE WHEN $2::jsonb ? 'priority' THEN ($2::jsonb ->> 'priority')::int ELSE priority END,
    error_type = CASE WHEN $2::jsonb ? 'error_type' THEN $2::jsonb ->> 'error_type' ELSE error_type END,
    error = CASE WHEN $2::jsonb ? 'error' THEN $2::jsonb ->> 'error' ELSE error END,
    content_type = CASE WHEN $2::jsonb ? 'content_type' THEN $2::jsonb ->> 'content_type' ELSE content_type END,
    job_started = CASE
        WHEN $2::jsonb ? 'job_started' THEN ($2::jsonb ->> 'job_started')::timestamptz
        ELSE job_started
    END,
    job_ended = CASE WHEN $2::jsonb ? 'job_ended' THEN ($2::jsonb ->> 'job_ended')::timestamptz ELSE job_ended END,
    install_job_id = CASE
        WHEN $2::jsonb ? 'install_job_id' THEN ($2::jsonb ->> 'install_job_id')::bigint
        ELSE install_job_id
    END,
    sha256 = CASE WHEN $2::jsonb ? 'sha256' THEN $2::jsonb ->> 'sha256' ELSE sha256 END,
    kind = CASE WHEN $2::jsonb ? 'kind' THEN $2::jsonb ->> 'kind' ELSE kind END,
    owner = CASE WHEN $2::jsonb ? 'owner' THEN $2::jsonb ->> 'owner' ELSE owner END,
    updated_at = now()
WHERE id = $1
  AND NOT ($2::jsonb ? 'status' AND status IN ('completed', 'error', 'cancelled'))
RETURNING *;

-- name: prune_downloads
-- Delete finished downloads that belong to no install (an install's parts go when the install is pruned).
WITH pruned AS (
    DELETE FROM download_jobs
    WHERE install_job_id IS NULL
      AND status IN ('completed', 'error', 'cancelled')
    RETURNING 1
)
SELECT count(*) FROM pruned;

-- name: renew_install_leases
-- Extend by $2 seconds the leases of the unfinished installs in $1 (bigint[]), the ones this replica runs.
UPDATE model_install_jobs
SET lease_expires_at = now() + make_interval(secs => $2)
WHERE id = ANY($1::bigint[])
  AND status NOT IN ('completed', 'error', 'cancelled');

-- name: reap_installs
-- End as errors ($1 reason, $2 message) the unfinished installs whose lease expired: their replica stopped.
UPDATE model_install_jobs
SET status = 'error', error_reason = $1, error = $2, updated_at = now()
WHERE status NOT IN ('completed', 'error', 'cancelled')
  AND lease_expires_at < now()
RETURNING *;

-- name: renew_download_leases
-- Extend by $2 seconds the leases of the unfinished downloads in $1 (bigint[]), the ones this replica runs.
UPDATE download_jobs
SET lease_expires_at = now() + make_interval(secs => $2)
WHERE id = ANY($1::bigint[])
  AND status NOT IN ('completed', 'error', 'cancelled');

-- name: reap_downloads
-- End as errors ($1 type, $2 message) the unfinished downloads whose lease expired: their replica stopped.
UPDATE download_jobs
SET status = 'error', error_type = $1, error = $2, job_ended = now(), updated_at = now()
WHERE status NOT IN ('completed', 'error', 'cancelled')
  AND lease_expires_at < now()
RETURNING *;
