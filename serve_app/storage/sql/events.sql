-- The event bus's statements (serve_app/storage/event_bus.py). Each starts with a `-- name: <name>`
-- line, then a one-line description. A bus message is JSON text; NOTIFY carries it inline when it
-- fits, otherwise a reference to an `event_overflow` row. The row keeps the exact text (as a jsonb
-- string, so jsonb does not reorder the payload's keys).

-- name: notify
-- Send one bus message (or an overflow reference) to every listener; delivered at commit.
SELECT pg_notify($1::text, $2::text);

-- name: insert_overflow
-- Park a message too large for NOTIFY; the listener reads it back by id.
INSERT INTO event_overflow (payload) VALUES (to_jsonb($1::text)) RETURNING id;

-- name: load_overflow
-- The exact JSON text of a parked message (NULL once pruned).
SELECT payload #>> '{}' FROM event_overflow WHERE id = $1;

-- name: prune_overflow
-- Forget parked messages older than the given number of seconds; every listener has long read them.
DELETE FROM event_overflow WHERE created_at < now() - make_interval(secs => $1::float8);
