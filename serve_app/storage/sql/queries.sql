-- Every SQL statement serve_app.storage runs. Each starts with a `-- name: <name>` line, then a
-- one-line description; serve_app/storage/queries.py loads them into typed constants.
-- Fencing: a running job's reports carry (id, attempt) and match only `status = 'in_progress'`,
-- so a stale attempt can never overwrite a newer one, and terminal rows are never touched.

-- name: migration_lock
-- Serialize migrations: replicas that start together all run `upgrade`; the others wait here and
-- then find nothing left to do. (The key is an arbitrary constant; advisory locks are per database.)
SELECT pg_advisory_xact_lock(7310150000000000001);

-- name: current_revision
-- The Alembic revision the database is at.
SELECT version_num FROM alembic_version;

-- name: ping
-- Liveness probe for the change feed's otherwise silent LISTEN connection.
SELECT 1;

-- name: enqueue_lock
-- Serialize enqueues that check max_waiting, so concurrent submitters cannot all pass the check
-- and then overshoot together. Held until the enqueue transaction ends.
SELECT pg_advisory_xact_lock(7310150000000000002);

-- name: count_pending
-- How many jobs wait to be claimed (the partial claim index covers exactly these rows).
SELECT count(*) FROM jobs WHERE status = 'pending';

-- name: insert_jobs
-- Insert a whole submission in one statement; ORDER BY the ordinality so item_id follows submission order.
INSERT INTO jobs (id, queue_id, batch_id, origin, destination, priority, request, owner, max_attempts,
                  session_id, field_values, workflow, retried_from_item_id)
SELECT new.id, new.queue_id, new.batch_id, new.origin, new.destination, new.priority,
       new.request::jsonb, new.owner, new.max_attempts,
       new.session_id, new.field_values::jsonb, new.workflow::jsonb, new.retried_from_item_id
FROM unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[], $9::int[],
    $10::text[], $11::text[], $12::text[], $13::bigint[]
) WITH ORDINALITY AS new (id, queue_id, batch_id, origin, destination, priority, request, owner, max_attempts,
                          session_id, field_values, workflow, retried_from_item_id, n)
ORDER BY new.n
RETURNING *;

-- name: get_job
-- One job with the names of its images in output order (its outputs: intermediates, such as the decode
-- before an Enfugue upscale, are not results).
SELECT jobs.*,
       ARRAY(SELECT images.name FROM images WHERE images.job_id = jobs.id AND NOT images.is_intermediate
             ORDER BY images.position, images.name) AS image_names
FROM jobs
WHERE jobs.id = $1;

-- name: list_jobs
-- Jobs newest first (item_id is monotonic), optionally of one owner ($1 NULL = everyone).
SELECT jobs.*,
       ARRAY(SELECT images.name FROM images WHERE images.job_id = jobs.id AND NOT images.is_intermediate
             ORDER BY images.position, images.name) AS image_names
FROM jobs
WHERE $1::text IS NULL OR jobs.owner = $1
ORDER BY jobs.item_id DESC
LIMIT $2 OFFSET $3;

-- name: count_by_status
-- Jobs per status, optionally of one queue ($1 NULL = all queues).
SELECT status, count(*) AS n
FROM jobs
WHERE $1::text IS NULL OR queue_id = $1
GROUP BY status;

-- name: claim_jobs
-- Claim up to $1 pending jobs, highest priority first then FIFO, with a lease of $2 seconds.
WITH
-- The candidates, locked without waiting: rows another claimer holds are skipped, so concurrent
-- claimers take disjoint sets and nobody queues behind anybody.
picked AS (
    SELECT id
    FROM jobs
    WHERE status = 'pending'
      -- The processor switch (InvokeAI's pause): a paused queue hands out nothing new.
      AND NOT EXISTS (SELECT 1 FROM queue_processor WHERE paused)
    ORDER BY priority DESC, item_id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
-- Start a new attempt: the incremented attempts is the fence every later report must match.
claimed AS (
    UPDATE jobs
    SET status = 'in_progress',
        attempts = attempts + 1,
        lease_expires_at = now() + make_interval(secs => $2),
        started_at = coalesce(started_at, now()),
        progress_step = NULL,
        progress_total = NULL,
        updated_at = now()
    WHERE id IN (SELECT id FROM picked)
    RETURNING id, attempts, request, priority, item_id, queue_id, batch_id, origin, destination, session_id, owner
)
SELECT id, attempts AS attempt, request, item_id, queue_id, batch_id, origin, destination, session_id, owner
FROM claimed
ORDER BY priority DESC, item_id;

-- name: renew_leases
-- Extend the leases of ($1 ids, $2 attempts) pairs still running by $3 seconds; return the ids renewed.
UPDATE jobs
SET lease_expires_at = now() + make_interval(secs => $3)
FROM unnest($1::uuid[], $2::int[]) AS claim (id, attempt)
WHERE jobs.id = claim.id AND jobs.attempts = claim.attempt AND jobs.status = 'in_progress'
RETURNING jobs.id;

-- name: report_progress
-- Record step $3 of $4 for attempt $2 of job $1.
UPDATE jobs
SET progress_step = $3, progress_total = $4, updated_at = now()
WHERE id = $1 AND attempts = $2 AND status = 'in_progress'
RETURNING true;

-- name: complete_job
-- Mark attempt $2 of job $1 completed with executed session $3 (NULL keeps the column as it is);
-- image rows are written in the same transaction.
UPDATE jobs
SET status = 'completed',
    session = coalesce($3::jsonb, session),
    progress_step = progress_total,
    lease_expires_at = NULL,
    error_type = NULL,
    error_message = NULL,
    error_traceback = NULL,
    completed_at = now(),
    updated_at = now()
WHERE id = $1 AND attempts = $2 AND status = 'in_progress'
RETURNING true;

-- name: upsert_image
-- One image row; names are deterministic per job and index, so a retry overwrites instead of duplicating.
INSERT INTO images (name, job_id, position, width, height, storage_key, thumbnail_key, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (name) DO UPDATE
SET job_id = EXCLUDED.job_id,
    position = EXCLUDED.position,
    width = EXCLUDED.width,
    height = EXCLUDED.height,
    storage_key = EXCLUDED.storage_key,
    thumbnail_key = EXCLUDED.thumbnail_key,
    metadata = EXCLUDED.metadata,
    updated_at = now();

-- name: fail_job
-- Mark attempt $2 of job $1 failed with error ($3 type, $4 message, $5 traceback) and session $6 (NULL: keep).
UPDATE jobs
SET status = 'failed',
    session = coalesce($6::jsonb, session),
    error_type = $3,
    error_message = $4,
    error_traceback = $5,
    lease_expires_at = NULL,
    completed_at = now(),
    updated_at = now()
WHERE id = $1 AND attempts = $2 AND status = 'in_progress'
RETURNING true;

-- name: release_job
-- Give attempt $2 of job $1 back after error ($3, $4, $5): pending again, or failed once attempts
-- are exhausted. SET expressions see the old row, so `attempts` is the attempt being released.
UPDATE jobs
SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END,
    error_type = CASE WHEN attempts >= max_attempts THEN 'RetriesExhausted' ELSE $3::text END,
    error_message = CASE
        WHEN attempts >= max_attempts THEN format('gave up after %s attempts: %s: %s', attempts, $3::text, $4::text)
        ELSE $4::text
    END,
    error_traceback = $5,
    lease_expires_at = NULL,
    progress_step = NULL,
    progress_total = NULL,
    completed_at = CASE WHEN attempts >= max_attempts THEN now() END,
    updated_at = now()
WHERE id = $1 AND attempts = $2 AND status = 'in_progress'
RETURNING status;

-- name: requeue_expired
-- The reaper: release every running job whose lease expired with error ($1 type, $2 message); count them.
WITH
-- Expired leases only. SKIP LOCKED: a row locked right now belongs to a worker that is reporting,
-- and its report decides the job's fate; reapers on several replicas never wait for each other.
expired AS (
    SELECT id
    FROM jobs
    WHERE status = 'in_progress' AND lease_expires_at < now()
    FOR UPDATE SKIP LOCKED
),
-- The same rule as release_job: pending again until the attempts run out, then failed.
released AS (
    UPDATE jobs
    SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END,
        error_type = CASE WHEN attempts >= max_attempts THEN 'RetriesExhausted' ELSE $1::text END,
        error_message = CASE
            WHEN attempts >= max_attempts THEN format('gave up after %s attempts: %s: %s', attempts, $1::text, $2::text)
            ELSE $2::text
        END,
        error_traceback = NULL,
        lease_expires_at = NULL,
        progress_step = NULL,
        progress_total = NULL,
        completed_at = CASE WHEN attempts >= max_attempts THEN now() END,
        updated_at = now()
    WHERE id IN (SELECT id FROM expired)
    RETURNING 1
)
SELECT count(*) FROM released;

-- name: cancel_job
-- Cancel job $1 if it is still pending or running; terminal jobs stay as they are.
UPDATE jobs
SET status = 'canceled',
    lease_expires_at = NULL,
    completed_at = now(),
    updated_at = now()
WHERE id = $1 AND status IN ('pending', 'in_progress');

-- name: delete_job_images
-- A job's image rows, deleted and returned so their objects can be deleted too.
DELETE FROM images WHERE job_id = $1 RETURNING *;

-- name: delete_job
-- The job row itself (after its images: the FK's SET NULL would otherwise detach them first).
DELETE FROM jobs WHERE id = $1 RETURNING id;

-- name: get_image
-- One image row by name.
SELECT * FROM images WHERE name = $1;

-- name: lock_running_attempt
-- Lock job $1 if attempt $2 is the running one (the fence for writes outside the jobs row).
SELECT true FROM jobs WHERE id = $1 AND attempts = $2 AND status = 'in_progress' FOR UPDATE;

-- name: insert_generated_image
-- An image a graph node produced (origin internal). A board deleted meanwhile leaves it without a board;
-- a name already stored (a retried attempt) is kept as it is.
INSERT INTO images (name, job_id, position, width, height, category, is_intermediate, metadata, storage_key,
                    thumbnail_key, origin, board_id, session_id, node_id, has_workflow, owner)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'internal',
        (SELECT board_id FROM boards WHERE board_id = $11), $12, $13, $14, $15)
ON CONFLICT (name) DO NOTHING;
