-- The account statements of serve_app.storage.account_repository (tables users and auth_tokens). Each starts
-- with a `-- name: <name>` line, then a description. Usernames match ignoring case (the unique index is on
-- lower(username)); tokens are found by their sha256, never stored in clear.

-- name: admin_lock
-- Serialises the statements that could remove the last admin (two concurrent demotions would each see another
-- admin left). Held until the transaction ends.
SELECT pg_advisory_xact_lock(hashtext('serve_app.users.admins'));

-- name: insert_user
-- A new user; no row back when the username is taken in any case.
INSERT INTO users (username, password_hash, admin, first_name, last_name)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT ((lower(username))) DO NOTHING
RETURNING *;

-- name: get_user
-- One user by username, ignoring case.
SELECT * FROM users WHERE lower(username) = lower($1);

-- name: list_users
-- Every user, by username.
SELECT * FROM users ORDER BY lower(username);

-- name: user_source
-- Every user, for the generic REST query language (storage/rest_query_sql.py wraps it as `q`); no secrets.
SELECT id, username, first_name, last_name, admin, created_at, last_login FROM users

-- name: count_users
-- How many users exist.
SELECT count(*) FROM users;

-- name: count_admins
-- Admins who can log in (authentication may only be turned on when one exists).
SELECT count(*) FROM users WHERE admin AND password_hash <> '';

-- name: other_admins
-- Admins other than user $1 (by username, ignoring case).
SELECT count(*) FROM users WHERE admin AND lower(username) <> lower($1);

-- name: update_user
-- Change the non-null fields among $2 (password_hash), $3 (admin), $4 (first_name), $5 (last_name).
UPDATE users
SET password_hash = coalesce($2, password_hash),
    admin = coalesce($3, admin),
    first_name = coalesce($4, first_name),
    last_name = coalesce($5, last_name)
WHERE lower(username) = lower($1)
RETURNING *;

-- name: delete_user
-- Remove a user (their tokens go by ON DELETE CASCADE); the id back, or no row when there was none.
DELETE FROM users WHERE lower(username) = lower($1) RETURNING id;

-- name: record_login
-- Stamp a successful login.
UPDATE users SET last_login = $2 WHERE id = $1;

-- name: insert_token
-- A new session token or API key: user_id, token_hash, kind, name, created_at, expires_at (both times from the
-- service's clock, so a token's lifetime is exactly what it asked for).
INSERT INTO auth_tokens (user_id, token_hash, kind, name, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, user_id, kind, name, created_at, expires_at, last_used_at;

-- name: find_token
-- A token by its hash, with its user's columns prefixed `u_`.
SELECT t.id, t.user_id, t.kind, t.name, t.created_at, t.expires_at, t.last_used_at,
       u.id AS u_id, u.username AS u_username, u.admin AS u_admin, u.created_at AS u_created_at,
       u.first_name AS u_first_name, u.last_name AS u_last_name, u.last_login AS u_last_login
FROM auth_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = $1;

-- name: touch_token
-- Stamp a token's use.
UPDATE auth_tokens SET last_used_at = $2 WHERE id = $1;

-- name: delete_token
-- Remove a token by its hash; its id back, or no row when there was none.
DELETE FROM auth_tokens WHERE token_hash = $1 RETURNING id;

-- name: list_tokens
-- One user's tokens of one kind, newest first.
SELECT id, user_id, kind, name, created_at, expires_at, last_used_at
FROM auth_tokens
WHERE user_id = $1 AND kind = $2
ORDER BY created_at DESC, id DESC;

-- name: delete_token_by_id
-- Remove token $2 if it belongs to user $1; its id back, or no row.
DELETE FROM auth_tokens WHERE user_id = $1 AND id = $2 RETURNING id;

-- name: delete_tokens
-- Remove every token of kind $1 (turning authentication on or off revokes all login sessions); how many.
WITH deleted AS (DELETE FROM auth_tokens WHERE kind = $1 RETURNING id)
SELECT count(*) FROM deleted;
