-- The image and board statements of serve_app.storage.image_repository. Each starts with a
-- `-- name: <name>` line, then a description; serve_app/storage/image_queries.py loads them.
-- Every value is a bound parameter. The one exception is `/*order*/`: the repository replaces it
-- at import time with one of a fixed set of ORDER BY lists (a direction is not a parameter).
--
-- Image filters, the same in list_images, count_images and image_names:
-- $1 origin, $2 categories (text[]), $3 is_intermediate, $4 board id ('none': on no board),
-- $5 search pattern (an ILIKE pattern over the metadata JSON and the created_at string), $6 owner;
-- NULL leaves a filter out.

-- name: insert_images
-- Insert images (arrays, one element per image), or overwrite a retried attempt's rows of the same
-- names. A board that no longer exists becomes no board. Returns the rows in input order.
WITH new AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::uuid[], $3::int[], $4::int[], $5::int[], $6::text[], $7::boolean[], $8::text[],
        $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::boolean[], $16::text[]
    ) WITH ORDINALITY AS new (
        name, job_id, position, width, height, category, is_intermediate, metadata,
        storage_key, thumbnail_key, origin, board_id, session_id, node_id, has_workflow, owner, n
    )
),
inserted AS (
    INSERT INTO images (
        name, job_id, position, width, height, category, is_intermediate, metadata,
        storage_key, thumbnail_key, origin, board_id, session_id, node_id, has_workflow, owner
    )
    SELECT new.name, new.job_id, new.position, new.width, new.height, new.category, new.is_intermediate,
           new.metadata::jsonb, new.storage_key, new.thumbnail_key, new.origin, boards.board_id,
           new.session_id, new.node_id, new.has_workflow, new.owner
    FROM new
    LEFT JOIN boards ON boards.board_id = new.board_id
    ORDER BY new.n
    ON CONFLICT (name) DO UPDATE
    SET job_id = EXCLUDED.job_id,
        position = EXCLUDED.position,
        width = EXCLUDED.width,
        height = EXCLUDED.height,
        category = EXCLUDED.category,
        is_intermediate = EXCLUDED.is_intermediate,
        metadata = EXCLUDED.metadata,
        storage_key = EXCLUDED.storage_key,
        thumbnail_key = EXCLUDED.thumbnail_key,
        origin = EXCLUDED.origin,
        board_id = EXCLUDED.board_id,
        session_id = EXCLUDED.session_id,
        node_id = EXCLUDED.node_id,
        has_workflow = EXCLUDED.has_workflow,
        owner = EXCLUDED.owner,
        updated_at = now()
    RETURNING *
)
SELECT inserted.*
FROM inserted
JOIN new USING (name)
ORDER BY new.n;

-- name: get_image
-- One image by name.
SELECT * FROM images WHERE name = $1;

-- name: get_images
-- The images named in $1, in that order; unknown names are skipped.
SELECT images.*
FROM unnest($1::text[]) WITH ORDINALITY AS wanted (name, n)
JOIN images USING (name)
ORDER BY wanted.n;

-- name: list_images
-- One page of the images matching the filters ($1..$6 as above): $7 limit, $8 offset.
SELECT *
FROM images
WHERE ($1::text IS NULL OR origin = $1)
  AND ($2::text[] IS NULL OR category = ANY ($2))
  AND ($3::boolean IS NULL OR is_intermediate = $3)
  AND ($4::text IS NULL OR ($4 = 'none' AND board_id IS NULL) OR board_id = $4)
  AND ($5::text IS NULL
       OR metadata::text ILIKE $5
       OR to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') ILIKE $5)
  AND ($6::text IS NULL OR owner = $6)
ORDER BY /*order*/
LIMIT $7 OFFSET $8;

-- name: count_images
-- How many images match the filters ($1..$6 as above).
SELECT count(*)
FROM images
WHERE ($1::text IS NULL OR origin = $1)
  AND ($2::text[] IS NULL OR category = ANY ($2))
  AND ($3::boolean IS NULL OR is_intermediate = $3)
  AND ($4::text IS NULL OR ($4 = 'none' AND board_id IS NULL) OR board_id = $4)
  AND ($5::text IS NULL
       OR metadata::text ILIKE $5
       OR to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') ILIKE $5)
  AND ($6::text IS NULL OR owner = $6);

-- name: image_names
-- Every matching name in order, with its star (for the starred count).
SELECT name, starred
FROM images
WHERE ($1::text IS NULL OR origin = $1)
  AND ($2::text[] IS NULL OR category = ANY ($2))
  AND ($3::boolean IS NULL OR is_intermediate = $3)
  AND ($4::text IS NULL OR ($4 = 'none' AND board_id IS NULL) OR board_id = $4)
  AND ($5::text IS NULL
       OR metadata::text ILIKE $5
       OR to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') ILIKE $5)
  AND ($6::text IS NULL OR owner = $6)
ORDER BY /*order*/;

-- name: update_image
-- Apply the non-NULL changes to image $1: $2 category, $3 session_id, $4 is_intermediate, $5 starred.
UPDATE images
SET category = coalesce($2, category),
    session_id = coalesce($3, session_id),
    is_intermediate = coalesce($4, is_intermediate),
    starred = coalesce($5, starred),
    updated_at = now()
WHERE name = $1
RETURNING *;

-- name: set_starred
-- Star ($2 true) or unstar the images named in $1; returns the updated rows in request order.
WITH updated AS (
    UPDATE images
    SET starred = $2, updated_at = now()
    WHERE name = ANY ($1::text[])
    RETURNING *
)
SELECT updated.*
FROM unnest($1::text[]) WITH ORDINALITY AS wanted (name, n)
JOIN updated USING (name)
ORDER BY wanted.n;

-- name: delete_images
-- Delete the images named in $1; the deleted rows come back so their objects can go too.
DELETE FROM images WHERE name = ANY ($1::text[]) RETURNING *;

-- name: count_intermediates
-- How many intermediate images there are ($1 owner, NULL: everyone's).
SELECT count(*) FROM images WHERE is_intermediate AND ($1::text IS NULL OR owner = $1);

-- name: delete_intermediates
-- Delete every intermediate image ($1 owner, NULL: everyone's).
DELETE FROM images WHERE is_intermediate AND ($1::text IS NULL OR owner = $1) RETURNING *;

-- name: delete_uncategorized
-- Delete every image on no board ($1 owner, NULL: everyone's).
DELETE FROM images WHERE board_id IS NULL AND ($1::text IS NULL OR owner = $1) RETURNING *;

-- name: insert_board
-- A new board: $1 id, $2 name, $3 is_private, $4 owner.
INSERT INTO boards (board_id, board_name, is_private, owner) VALUES ($1, $2, $3, $4);

-- name: get_board
-- One board with its cover (the newest non-intermediate image, starred first) and its counts.
SELECT boards.*, cover.name AS cover_image_name, counts.image_count, counts.asset_count
FROM boards
LEFT JOIN LATERAL (
    SELECT images.name
    FROM images
    WHERE images.board_id = boards.board_id AND NOT images.is_intermediate
    ORDER BY images.starred DESC, images.created_at DESC, images.name DESC
    LIMIT 1
) AS cover ON true
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE images.category = 'general') AS image_count,
           count(*) FILTER (WHERE images.category <> 'general') AS asset_count
    FROM images
    WHERE images.board_id = boards.board_id AND NOT images.is_intermediate
) AS counts
WHERE boards.board_id = $1;

-- name: list_boards
-- Boards in order: $1 include archived ones, $2 owner (NULL: everyone's), $3 limit (NULL: all), $4 offset.
SELECT boards.*, cover.name AS cover_image_name, counts.image_count, counts.asset_count
FROM boards
LEFT JOIN LATERAL (
    SELECT images.name
    FROM images
    WHERE images.board_id = boards.board_id AND NOT images.is_intermediate
    ORDER BY images.starred DESC, images.created_at DESC, images.name DESC
    LIMIT 1
) AS cover ON true
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE images.category = 'general') AS image_count,
           count(*) FILTER (WHERE images.category <> 'general') AS asset_count
    FROM images
    WHERE images.board_id = boards.board_id AND NOT images.is_intermediate
) AS counts
WHERE ($1::boolean OR NOT boards.archived) AND ($2::text IS NULL OR boards.owner = $2)
ORDER BY /*order*/
LIMIT $3 OFFSET $4;

-- name: count_boards
-- How many boards list_boards would list without a limit ($1, $2 as there).
SELECT count(*) FROM boards WHERE ($1::boolean OR NOT archived) AND ($2::text IS NULL OR owner = $2);

-- name: update_board
-- Apply the non-NULL changes to board $1: $2 name, $3 archived. Returns the id, or nothing if no such board.
UPDATE boards
SET board_name = coalesce($2, board_name),
    archived = coalesce($3, archived),
    updated_at = now()
WHERE board_id = $1
RETURNING board_id;

-- name: lock_board
-- Board $1 exists, and stays until the transaction ends (a concurrent delete waits).
SELECT board_id FROM boards WHERE board_id = $1 FOR KEY SHARE;

-- name: unboard_images
-- Take every image off board $1 (before the board is deleted); returns the rows as they are now.
UPDATE images SET board_id = NULL, updated_at = now() WHERE board_id = $1 RETURNING *;

-- name: delete_board_images
-- Delete every image on board $1; the deleted rows come back so their objects can go too.
DELETE FROM images WHERE board_id = $1 RETURNING *;

-- name: delete_board
-- Delete board $1 (its images are already gone or off it).
DELETE FROM boards WHERE board_id = $1;

-- name: move_images
-- Put the images named in $1 on board $2 (NULL: on no board); returns each moved name with the
-- board it was on before, in request order. The CTE reads the rows before the update changes them.
WITH old AS (
    SELECT name, board_id
    FROM images
    WHERE name = ANY ($1::text[])
    FOR UPDATE
),
moved AS (
    UPDATE images
    SET board_id = $2, updated_at = now()
    FROM old
    WHERE images.name = old.name
    RETURNING images.name, old.board_id AS old_board_id
)
SELECT moved.name AS image_name, moved.old_board_id
FROM unnest($1::text[]) WITH ORDINALITY AS wanted (name, n)
JOIN moved ON moved.name = wanted.name
ORDER BY wanted.n;
