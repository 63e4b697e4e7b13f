"""PgImageRepository on a real Postgres: filters, order, counts, stars, boards and moves."""

from __future__ import annotations

import uuid

import pytest

from serve_app.domain.boards import (
    BoardChanges,
    BoardNotFound,
    BoardOrderBy,
    ImageChanges,
    ImageQuery,
    SortDirection,
)
from serve_app.domain.errors import ImageNotFound
from serve_app.domain.images import (
    GeneratedImage,
    ImageCategory,
    NewImage,
    ResourceOrigin,
    StoredImage,
    image_key,
    thumbnail_key,
)
from serve_app.domain.jobs import NewJob
from serve_app.storage.image_repository import PgImageRepository, search_pattern

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def images(pool) -> PgImageRepository:
    return PgImageRepository(pool)


def new_image(name: str | None = None, **fields) -> NewImage:
    name = name or f"{uuid.uuid4()}.png"
    return NewImage(
        name=name,
        width=64,
        height=32,
        position=0,
        storage_key=image_key(name),
        thumbnail_key=thumbnail_key(name),
        **fields,
    )


async def add(images: PgImageRepository, pool, *specs: dict, step_s: int = 1) -> list[str]:
    """Insert uploads with created_at one `step_s` apart, oldest first; return their names in that order."""
    names = []
    for index, spec in enumerate(specs):
        record = await images.add_uploaded(new_image(**spec))
        await pool.execute(
            "UPDATE images SET created_at = timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => $2), "
            "updated_at = timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => $2) WHERE name = $1",
            record.name,
            index * step_s,
        )
        names.append(record.name)
    return names


async def test_uploaded_and_generated_rows_round_trip(images, pool):
    board = await images.create_board("b")
    uploaded = await images.add_uploaded(
        new_image(
            category=ImageCategory.USER,
            is_intermediate=True,
            board_id=board.board_id,
            session_id="s",
            has_workflow=True,
            owner="alice",
            metadata={"prompt": "a cat"},
        )
    )
    assert uploaded.origin == "external"
    assert (uploaded.category, uploaded.is_intermediate, uploaded.board_id) == ("user", True, board.board_id)
    assert (uploaded.session_id, uploaded.node_id, uploaded.has_workflow, uploaded.owner) == ("s", None, True, "alice")
    assert uploaded.metadata == {"prompt": "a cat"}
    assert uploaded.starred is False and uploaded.deleted_at is None
    assert uploaded.updated_at is not None

    first = GeneratedImage(**new_image(session_id="s1", node_id="n1").model_dump())
    second = GeneratedImage(**new_image(board_id="no-such-board").model_dump())
    generated = await images.add_generated([first, second])
    assert [record.name for record in generated] == [first.name, second.name]
    assert {record.origin for record in generated} == {"internal"}
    assert generated[0].node_id == "n1"
    # A board deleted meanwhile is no board, not an error.
    assert generated[1].board_id is None

    # A retried attempt overwrites its rows instead of failing.
    retried = await images.add_generated([first.model_copy(update={"width": 128})])
    assert retried[0].width == 128
    assert (await images.get(first.name)).width == 128
    assert await pool.fetchval("SELECT count(*) FROM images") == 3


async def test_job_images_keep_working_with_the_new_columns(repo, images):
    # The Enfugue path: PgJobRepository writes and reads rows that lack the InvokeAI fields.
    (job,) = await repo.enqueue([NewJob(request={})])
    (claimed,) = await repo.claim(1, 30)
    name = f"{job.id.hex}_0.png"
    stored = StoredImage(
        name=name, width=8, height=8, position=0, storage_key=image_key(name), thumbnail_key=thumbnail_key(name)
    )
    assert await repo.complete(job.id, claimed.attempt, [stored])
    record = await images.get(name)
    assert (record.origin, record.category, record.board_id, record.owner) == ("internal", "general", None, "admin")
    assert (await repo.get_image(name)).name == name


async def test_get_missing_raises(images):
    with pytest.raises(ImageNotFound):
        await images.get("missing.png")
    with pytest.raises(ImageNotFound):
        await images.update("missing.png", ImageChanges(starred=True))


async def test_filters_order_and_pagination(images, pool):
    board = await images.create_board("b")
    names = await add(
        images,
        pool,
        {},  # 0: general, no board
        {"category": ImageCategory.MASK},  # 1
        {"is_intermediate": True},  # 2
        {"board_id": board.board_id},  # 3
        {"metadata": {"positive_prompt": "A Red 100%_Fox"}},  # 4
        {},  # 5
    )
    await images.add_generated([GeneratedImage(**new_image(name="gen.png").model_dump())])
    await pool.execute("UPDATE images SET created_at = '2025-06-01 12:00:00+00' WHERE name = 'gen.png'")

    async def listed(**fields) -> list[str]:
        page = await images.list_images(ImageQuery(**fields), offset=0, limit=100)
        assert page.total == len(page.items)
        return [record.name for record in page.items]

    newest_first = list(reversed(names)) + ["gen.png"]
    assert await listed() == newest_first
    assert await listed(order_dir=SortDirection.ASC) == ["gen.png", *names]
    assert await listed(image_origin=ResourceOrigin.INTERNAL) == ["gen.png"]
    assert await listed(image_origin=ResourceOrigin.EXTERNAL) == list(reversed(names))
    assert await listed(categories=(ImageCategory.MASK,)) == [names[1]]
    general = (ImageCategory.GENERAL,)
    assert await listed(categories=general, is_intermediate=False) == [
        names[5],
        names[4],
        names[3],
        names[0],
        "gen.png",
    ]
    assert await listed(is_intermediate=True) == [names[2]]
    assert await listed(board_id=board.board_id) == [names[3]]
    assert names[3] not in await listed(board_id="none")
    assert len(await listed(board_id="none")) == 6
    assert await listed(board_id="unknown-board") == []
    # search_term: case-insensitive substring of the metadata JSON, with % and _ taken literally.
    assert await listed(search_term="red 100%_fox") == [names[4]]
    assert await listed(search_term="100%x") == []
    assert await listed(search_term="_") == [names[4]]
    # ...or of the created_at string InvokeAI shows.
    assert await listed(search_term="2025-06-01 12:00") == ["gen.png"]
    assert await listed(owner="admin") == newest_first
    assert await listed(owner="bob") == []

    # Starred first (the default), then newest; without starred_first, stars do not count.
    await images.set_starred([names[0]], True)
    assert (await listed())[0] == names[0]
    assert (await listed(starred_first=False))[-2] == names[0]

    page = await images.list_images(ImageQuery(starred_first=False), offset=2, limit=2)
    assert page.total == 7
    assert [record.name for record in page.items] == [names[3], names[2]]
    # limit=0: the UI's way to count.
    counted = await images.list_images(ImageQuery(categories=general), offset=0, limit=0)
    assert (counted.total, counted.items) == (6, [])
    beyond = await images.list_images(ImageQuery(), offset=50, limit=10)
    assert (beyond.total, beyond.items) == (7, [])


async def test_names_with_counts(images, pool):
    names = await add(images, pool, {}, {}, {}, {"category": ImageCategory.CONTROL})
    await images.set_starred([names[1]], True)

    result = await images.names(ImageQuery())
    assert result.image_names == [names[1], names[3], names[2], names[0]]
    assert (result.starred_count, result.total_count) == (1, 4)

    result = await images.names(ImageQuery(starred_first=False, order_dir=SortDirection.ASC))
    assert result.image_names == names
    # InvokeAI reports starred_count only when ordering starred-first.
    assert (result.starred_count, result.total_count) == (0, 4)

    result = await images.names(ImageQuery(categories=(ImageCategory.CONTROL,)))
    assert (result.image_names, result.total_count) == ([names[3]], 1)


async def test_get_many_keeps_request_order_and_skips_unknown(images, pool):
    names = await add(images, pool, {}, {}, {})
    got = await images.get_many([names[2], "nope.png", names[0], names[1]])
    assert [record.name for record in got] == [names[2], names[0], names[1]]
    assert await images.get_many([]) == []


async def test_update_applies_only_given_fields(images, pool):
    (name,) = await add(images, pool, {"session_id": "s0"})
    before = await images.get(name)

    updated = await images.update(name, ImageChanges(image_category=ImageCategory.OTHER, starred=True))
    assert (updated.category, updated.starred, updated.session_id, updated.is_intermediate) == (
        "other",
        True,
        "s0",
        False,
    )
    assert updated.updated_at is not None and before.updated_at is not None
    assert updated.updated_at > before.updated_at

    updated = await images.update(name, ImageChanges(session_id="s1", is_intermediate=True))
    assert (updated.category, updated.starred, updated.session_id, updated.is_intermediate) == (
        "other",
        True,
        "s1",
        True,
    )


async def test_deletes_return_the_rows(images, pool):
    board = await images.create_board("b")
    names = await add(
        images, pool, {}, {"is_intermediate": True}, {"board_id": board.board_id}, {"is_intermediate": True}
    )

    deleted = await images.delete([names[2], "nope.png", names[2]])
    assert [record.name for record in deleted] == [names[2]]
    assert deleted[0].storage_key == image_key(names[2])
    assert deleted[0].board_id == board.board_id

    assert await images.count_intermediates() == 2
    assert await images.count_intermediates(owner="bob") == 0
    assert sorted(record.name for record in await images.delete_intermediates()) == sorted([names[1], names[3]])
    assert await images.count_intermediates() == 0

    await images.add_uploaded(new_image(name="boarded.png", board_id=board.board_id))
    assert [record.name for record in await images.delete_uncategorized()] == [names[0]]
    assert [record.name for record in await images.get_many(["boarded.png"])] == ["boarded.png"]


async def test_set_starred_returns_rows_in_request_order(images, pool):
    names = await add(images, pool, {}, {})
    starred = await images.set_starred([names[1], "nope.png", names[0], names[1]], True)
    assert [record.name for record in starred] == [names[1], names[0]]
    assert all(record.starred for record in starred)
    unstarred = await images.set_starred([names[0]], False)
    assert [(record.name, record.starred) for record in unstarred] == [(names[0], False)]
    assert (await images.get(names[1])).starred is True


async def test_board_crud_cover_and_counts(images, pool):
    board = await images.create_board("holiday", is_private=True, owner="alice")
    assert (board.board_name, board.is_private, board.owner, board.archived) == ("holiday", True, "alice", False)
    assert (board.cover_image_name, board.image_count, board.asset_count) == (None, 0, 0)
    uuid.UUID(board.board_id)

    names = await add(
        images,
        pool,
        {"board_id": board.board_id},  # 0 general
        {"board_id": board.board_id},  # 1 general, newest general
        {"board_id": board.board_id, "category": ImageCategory.MASK},  # 2 asset
        {"board_id": board.board_id, "is_intermediate": True},  # 3 intermediate: never cover, never counted
        {},  # 4 on no board
    )
    got = await images.get_board(board.board_id)
    assert (got.cover_image_name, got.image_count, got.asset_count) == (names[2], 2, 1)

    # Starred first, then newest.
    await images.set_starred([names[0]], True)
    assert (await images.get_board(board.board_id)).cover_image_name == names[0]

    renamed = await images.update_board(board.board_id, BoardChanges(board_name="trip"))
    assert (renamed.board_name, renamed.archived) == ("trip", False)
    assert renamed.updated_at > board.updated_at
    archived = await images.update_board(board.board_id, BoardChanges(archived=True))
    assert (archived.board_name, archived.archived) == ("trip", True)

    with pytest.raises(BoardNotFound):
        await images.get_board("nope")
    with pytest.raises(BoardNotFound):
        await images.update_board("nope", BoardChanges(board_name="x"))


async def test_list_boards_order_archive_and_pages(images, pool):
    made = []
    for name in ("beta", "Alpha", "gamma"):
        made.append(await images.create_board(name))
    for index, board in enumerate(made):
        await pool.execute(
            "UPDATE boards SET created_at = timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => $2) "
            "WHERE board_id = $1",
            board.board_id,
            index,
        )
    await images.update_board(made[2].board_id, BoardChanges(archived=True))

    page = await images.list_boards()
    assert [board.board_name for board in page.items] == ["Alpha", "beta"]
    assert page.total == 2
    page = await images.list_boards(include_archived=True)
    assert [board.board_name for board in page.items] == ["gamma", "Alpha", "beta"]
    page = await images.list_boards(include_archived=True, direction=SortDirection.ASC)
    assert [board.board_name for board in page.items] == ["beta", "Alpha", "gamma"]
    # By name, case-insensitively.
    page = await images.list_boards(include_archived=True, order_by=BoardOrderBy.NAME, direction=SortDirection.ASC)
    assert [board.board_name for board in page.items] == ["Alpha", "beta", "gamma"]
    page = await images.list_boards(include_archived=True, order_by=BoardOrderBy.NAME, offset=1, limit=1)
    assert ([board.board_name for board in page.items], page.total) == (["beta"], 3)
    page = await images.list_boards(owner="bob")
    assert (page.items, page.total) == ([], 0)


async def test_move_images_between_boards(images, pool):
    first = await images.create_board("first")
    second = await images.create_board("second")
    names = await add(images, pool, {}, {"board_id": first.board_id}, {})

    moves = await images.move_images([names[0], names[1], "nope.png"], second.board_id)
    assert [(move.image_name, move.old_board_id) for move in moves] == [
        (names[0], None),
        (names[1], first.board_id),
    ]
    assert {(await images.get(name)).board_id for name in names[:2]} == {second.board_id}

    moves = await images.move_images([names[1]], None)
    assert [(move.image_name, move.old_board_id) for move in moves] == [(names[1], second.board_id)]
    assert (await images.get(names[1])).board_id is None

    with pytest.raises(BoardNotFound):
        await images.move_images([names[2]], "no-such-board")
    with pytest.raises(BoardNotFound):
        await images.move_images([], "no-such-board")
    assert (await images.get(names[2])).board_id is None


async def test_delete_board_with_and_without_images(images, pool):
    keep = await images.create_board("keep-images")
    purge = await images.create_board("purge-images")
    kept = await add(images, pool, {"board_id": keep.board_id}, {"board_id": keep.board_id})
    purged = await add(images, pool, {"board_id": purge.board_id})

    unboarded = await images.delete_board(keep.board_id, include_images=False)
    assert sorted(record.name for record in unboarded) == sorted(kept)
    assert {(await images.get(name)).board_id for name in kept} == {None}
    with pytest.raises(BoardNotFound):
        await images.get_board(keep.board_id)

    deleted = await images.delete_board(purge.board_id, include_images=True)
    assert [record.name for record in deleted] == purged
    assert await images.get_many(purged) == []

    # Deleting a board that is not there is not an error.
    assert await images.delete_board("nope", include_images=True) == []


def test_search_pattern_escapes_like_wildcards():
    assert search_pattern(None) is None
    assert search_pattern("  ") is None
    assert search_pattern("a%b_c\\d") == "%a\\%b\\_c\\\\d%"
