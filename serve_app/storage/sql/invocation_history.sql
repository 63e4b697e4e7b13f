-- Enfugue's `/api/invocation-history` (serve_app.storage.history_repository). Each starts with a `-- name: <name>`
-- line, then a description. The statement is a source for rest_query_sql.fetch_page: it is wrapped as
-- `(...) AS q` and the caller's filters, sorts and page are added outside it with later parameters.

-- name: history_source
-- Owner $1's Enfugue jobs as Enfugue's DiffusionInvocation columns: id (32 hex digits), user_id, started,
-- plan (the stored Enfugue request), duration (seconds of the run; 0 until it ends), outputs (images made),
-- error; item_id only orders ties.
SELECT replace(j.id::text, '-', '') AS id,
       j.owner AS user_id,
       j.created_at AS started,
       coalesce(j.request -> 'enfugue', '{}'::jsonb) AS plan,
       coalesce(extract(epoch FROM j.completed_at - j.started_at)::double precision, 0) AS duration,
       (SELECT count(*) FROM images i WHERE i.job_id = j.id AND NOT i.is_intermediate) AS outputs,
       j.error_message AS error,
       j.item_id
FROM jobs j
WHERE j.origin = 'enfugue' AND j.owner = $1
