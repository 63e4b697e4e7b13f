-- InvokeAI's session queue over the jobs table (serve_app/storage/session_queue_repository.py).
-- Every statement is scoped to one queue ($1 = queue_id) unless it says otherwise. Those taking an `owner`
-- parameter see only that user's items, or everyone's when it is NULL (admins; and every request with auth off).
-- Order of the queue everywhere: priority DESC, item_id ASC (the claim order).

-- name: max_pending_priority
-- The highest priority among pending items of queue $1 (0 when none): `prepend` goes one above it.
SELECT coalesce(max(priority), 0) FROM jobs WHERE queue_id = $1 AND status = 'pending';

-- name: list_all
-- Every item of queue $1, optionally of destination $2, in queue order; $3 owner.
SELECT * FROM jobs
WHERE queue_id = $1 AND ($2::text IS NULL OR destination = $2) AND ($3::text IS NULL OR owner = $3)
ORDER BY priority DESC, item_id;

-- name: item_ids_asc
-- Item ids of queue $1 by creation time, oldest first; $2 owner.
SELECT item_id FROM jobs WHERE queue_id = $1 AND ($2::text IS NULL OR owner = $2) ORDER BY created_at, item_id;

-- name: item_ids_desc
-- Item ids of queue $1 by creation time, newest first; $2 owner.
SELECT item_id FROM jobs WHERE queue_id = $1 AND ($2::text IS NULL OR owner = $2) ORDER BY created_at DESC, item_id DESC;

-- name: items_by_ids
-- Items $2 of queue $1 (missing ids, other queues' and other owners' ($3) items are simply absent).
SELECT * FROM jobs WHERE queue_id = $1 AND item_id = ANY($2::bigint[]) AND ($3::text IS NULL OR owner = $3);

-- name: list_cursor
-- The legacy cursor page: $2 items after (priority $5, item_id $4) in queue order, status $3 and destination $6
-- optional. A NULL cursor starts at the top. $7 owner.
SELECT * FROM jobs
WHERE queue_id = $1
  AND ($7::text IS NULL OR owner = $7)
  AND ($3::text IS NULL OR status = $3)
  AND ($6::text IS NULL OR destination = $6)
  AND ($4::bigint IS NULL OR priority < $5 OR (priority = $5 AND item_id > $4))
ORDER BY priority DESC, item_id
LIMIT $2;

-- name: get_item
-- One item by its queue item id, in any queue.
SELECT * FROM jobs WHERE item_id = $1;

-- name: current_item
-- The running item of queue $1 that started first (several run at once on several replicas); $2 owner.
SELECT * FROM jobs WHERE queue_id = $1 AND status = 'in_progress' AND ($2::text IS NULL OR owner = $2) ORDER BY started_at, item_id LIMIT 1;

-- name: next_item
-- The item of queue $1 the processor takes next (of those of owner $2).
SELECT * FROM jobs WHERE queue_id = $1 AND status = 'pending' AND ($2::text IS NULL OR owner = $2) ORDER BY priority DESC, item_id LIMIT 1;

-- name: status_counts
-- Items of queue $1 per status; $2 owner.
SELECT status, count(*) AS n FROM jobs WHERE queue_id = $1 AND ($2::text IS NULL OR owner = $2) GROUP BY status;

-- name: batch_counts
-- Items of batch $2 in queue $1 per status, with the batch's origin and destination; $3 owner.
SELECT status, count(*) AS n, min(origin) AS origin, min(destination) AS destination
FROM jobs WHERE queue_id = $1 AND batch_id = $2 AND ($3::text IS NULL OR owner = $3) GROUP BY status;

-- name: destination_counts
-- Items of destination $2 in queue $1 per status; $3 owner.
SELECT status, count(*) AS n FROM jobs
WHERE queue_id = $1 AND destination = $2 AND ($3::text IS NULL OR owner = $3) GROUP BY status;

-- name: cancel_pending
-- Cancel every pending item of queue $1 (of owner $2); count them.
WITH canceled AS (
    UPDATE jobs SET status = 'canceled', completed_at = now(), updated_at = now()
    WHERE queue_id = $1 AND status = 'pending' AND ($2::text IS NULL OR owner = $2)
    RETURNING 1
)
SELECT count(*) FROM canceled;

-- name: delete_pending
-- Delete every pending item of queue $1 (of owner $2); count them.
WITH deleted AS (
    DELETE FROM jobs WHERE queue_id = $1 AND status = 'pending' AND ($2::text IS NULL OR owner = $2) RETURNING 1
)
SELECT count(*) FROM deleted;

-- name: cancel_where
-- Cancel the unfinished items of queue $1 in batches $2 (NULL: any) and destination $3 (NULL: any);
-- count the pending ones only, as InvokeAI does (a running one is canceled too, but not counted). $4 owner.
WITH canceled AS (
    UPDATE jobs SET status = 'canceled', lease_expires_at = NULL, completed_at = now(), updated_at = now()
    FROM (SELECT id, status AS old_status FROM jobs
          WHERE queue_id = $1 AND status IN ('pending', 'in_progress')
            AND ($2::text[] IS NULL OR batch_id = ANY($2::text[]))
            AND ($3::text IS NULL OR destination = $3)
            AND ($4::text IS NULL OR owner = $4)
          FOR UPDATE) AS target
    WHERE jobs.id = target.id
    RETURNING target.old_status
)
SELECT count(*) FILTER (WHERE old_status = 'pending') FROM canceled;

-- name: cancel_running
-- Cancel the running items of queue $1 (destination $2, owner $3 when not NULL), before they are deleted.
UPDATE jobs SET status = 'canceled', lease_expires_at = NULL, completed_at = now(), updated_at = now()
WHERE queue_id = $1 AND status = 'in_progress' AND ($2::text IS NULL OR destination = $2)
  AND ($3::text IS NULL OR owner = $3);

-- name: delete_items
-- Delete the items of queue $1 (destination $2, owner $3 when not NULL); count them. Their images stay (SET NULL).
WITH deleted AS (
    DELETE FROM jobs
    WHERE queue_id = $1 AND ($2::text IS NULL OR destination = $2) AND ($3::text IS NULL OR owner = $3)
    RETURNING 1
)
SELECT count(*) FROM deleted;

-- name: prune
-- Delete the finished items of queue $1 (of owner $2); count them.
WITH deleted AS (
    DELETE FROM jobs
    WHERE queue_id = $1 AND status IN ('completed', 'failed', 'canceled') AND ($2::text IS NULL OR owner = $2)
    RETURNING 1
)
SELECT count(*) FROM deleted;

-- name: delete_item
-- Delete one item by its item id (its images stay).
DELETE FROM jobs WHERE item_id = $1;

-- name: retry_candidates
-- Failed or canceled items of queue $1 among item ids $2 (of owner $3), in the order asked, locked against a second
-- retry.
SELECT * FROM jobs
WHERE queue_id = $1 AND item_id = ANY($2::bigint[]) AND status IN ('failed', 'canceled')
  AND ($3::text IS NULL OR owner = $3)
ORDER BY array_position($2::bigint[], item_id)
FOR UPDATE;

-- name: set_paused
-- Flip the processor switch shared by every replica; return the new state.
UPDATE queue_processor SET paused = $1 WHERE id = 1 RETURNING paused;

-- name: wake_claimers
-- After a resume: re-announce one pending job on the jobs channel, so idle dispatchers claim at once
-- instead of at their next poll.
SELECT pg_notify('serve_app_jobs_v1', json_build_object(
    'id', id, 'item_id', item_id, 'queue_id', queue_id, 'status', status
)::text)
FROM jobs WHERE status = 'pending' ORDER BY priority DESC, item_id LIMIT 1;

-- name: processor_state
-- Whether the processor is paused, and whether anything runs anywhere.
SELECT (SELECT paused FROM queue_processor WHERE id = 1) AS paused,
       EXISTS (SELECT 1 FROM jobs WHERE status = 'in_progress') AS processing;
