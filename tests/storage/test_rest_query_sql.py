"""The REST query compiler on a real Postgres: every value is a bound parameter, columns come from a whitelist,
and `|`, `+`, `!`, ilike, sorts and pages mean what enfugue-api.md §4 says (plus our documented choices)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import pytest_asyncio

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.presets import ModelPreset
from serve_app.domain.rest_query import RestQuery, parse_rest_query
from serve_app.storage.preset_repository import PgPresetStore
from serve_app.storage.rest_query_sql import Column, ColumnKind, compile_query, fetch_page

pytestmark = pytest.mark.timeout(60)

INJECTIONS = [
    "x'; DROP TABLE things; --",
    "' OR '1'='1",
    "$1",
    "a\\' OR 1=1 --",
    "); DELETE FROM things; SELECT (",
]
# (name, size, score, flag, at, note, data)
ROWS = [
    ("alpha", 512, 1.5, True, datetime(2024, 1, 1, tzinfo=UTC), None, {"k": "Needle"}),
    ("beta", 1024, 2.0, False, datetime(2024, 1, 2, tzinfo=UTC), "n1", {}),
    ("gamma", 512, 0.5, None, datetime(2024, 1, 3, tzinfo=UTC), "n2", {}),
    ("007", 768, 3.0, True, datetime(2024, 1, 4, tzinfo=UTC), "50%_off", {}),
    ("delta", 1024, 1.0, False, datetime(2024, 1, 5, tzinfo=UTC), "gamma", {}),
    *((text, 1, 0.0, False, datetime(2024, 2, 1, tzinfo=UTC), None, {}) for text in INJECTIONS),
]
SOURCE = "SELECT * FROM things"
COLUMNS = {
    "name": Column("q.name"),
    "label": Column("q.name"),  # an API name mapped onto another column, as presets' `model`
    "size": Column("q.size", ColumnKind.INTEGER),
    "score": Column("q.score", ColumnKind.NUMBER),
    "flag": Column("q.flag", ColumnKind.BOOLEAN),
    "at": Column("q.at", ColumnKind.TIMESTAMP),
    "note": Column("q.note"),
    "data": Column("q.data", ColumnKind.JSON),
}


@pytest_asyncio.fixture
async def things(pool):
    await pool.execute(
        "CREATE TABLE things (name text PRIMARY KEY, size integer NOT NULL, score double precision NOT NULL, "
        "flag boolean, at timestamptz NOT NULL, note text, data jsonb NOT NULL)"
    )
    await pool.executemany("INSERT INTO things VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)", ROWS)
    return pool


async def select(pool, *params: tuple[str, str]) -> tuple[list[str], int]:
    rows, count = await fetch_page(pool, SOURCE, (), parse_rest_query(params), COLUMNS, tiebreak="q.name")
    return [row["name"] for row in rows], count


async def names(pool, *params: tuple[str, str]) -> set[str]:
    found, count = await select(pool, *params, ("limit", "0"))
    assert count == len(found)
    return set(found)


@pytest.mark.parametrize("text", INJECTIONS)
async def test_injection_strings_are_matched_literally_and_never_run(things, text: str) -> None:
    assert await names(things, ("filter", f"name:{text}")) == {text}
    assert await names(things, ("ilike", f"name:{text}")) == {text}
    assert await things.fetchval("SELECT count(*) FROM things") == len(ROWS)


def test_values_never_reach_the_sql_text() -> None:
    query = parse_rest_query([("filter", f"name:{INJECTIONS[0]}"), ("ilike", "note:zzz'q"), ("sort", "size")])
    compiled = compile_query(query, COLUMNS, tiebreak="q.name", first_param=3)
    text = compiled.where + compiled.order_by + compiled.page
    assert "DROP" not in text
    assert "zzz" not in text
    assert compiled.where == "((q.name = $3::text)) AND (q.note ILIKE $4::text)"
    assert compiled.where_params == (INJECTIONS[0], "%zzz'q%")
    assert compiled.page == "LIMIT $5::bigint OFFSET $6::bigint"
    assert compiled.page_params == (100, 0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("filter", "nope:1"),
        ("filter", "name|nope:1"),
        ("filter", "!nope:1"),
        ("ilike", "nope:x"),
        ("sort", "nope"),
        ("sort", "nope:desc"),
        ("sort", "name; DROP TABLE things"),
    ],
)
async def test_unknown_columns_are_invalid_requests(things, key: str, value: str) -> None:
    column = value.lstrip("!").split(":")[0].split("|")[-1] if key != "sort" else value.split(":")[0]
    with pytest.raises(InvalidRequest, match=f"^Unknown column {column}$") as caught:
        await select(things, (key, value))
    assert caught.value.field == key
    assert await things.fetchval("SELECT count(*) FROM things") == len(ROWS)


async def test_values_are_or_ed_and_filters_and_ed(things) -> None:
    assert await names(things, ("filter", "size:512|768")) == {"alpha", "gamma", "007"}
    assert await names(things, ("filter", "size:512|768"), ("filter", "flag:true")) == {"alpha", "007"}


async def test_columns_joined_by_bar_are_or_ed_and_by_plus_and_ed(things) -> None:
    # note "gamma" is delta's; name "gamma" is gamma's.
    assert await names(things, ("filter", "name|note:gamma")) == {"gamma", "delta"}
    assert await names(things, ("filter", "name+label:gamma")) == {"gamma"}
    assert await names(things, ("filter", "name+note:gamma")) == set()


async def test_a_negated_condition_also_keeps_null_rows(things) -> None:
    everyone = {row[0] for row in ROWS}
    assert await names(things, ("filter", "!note:n1|n2")) == everyone - {"beta", "gamma"}
    assert await names(things, ("filter", "!flag:true")) == everyone - {"alpha", "007"}
    assert await names(things, ("filter", "!name|note:gamma")) == everyone - {"gamma", "delta"}


async def test_null_matches_sql_nulls(things) -> None:
    assert await names(things, ("filter", "flag:null")) == {"gamma"}
    assert await names(things, ("filter", "note:null|n1"), ("filter", "size:512|1024")) == {"alpha", "beta"}
    assert await names(things, ("filter", "!note:null"), ("filter", "size:512|768")) == {"gamma", "007"}


async def test_values_are_compared_as_the_column_s_kind(things) -> None:
    # A text column compares the text as sent: "007" is not the number 7.
    assert await names(things, ("filter", "name:007")) == {"007"}
    assert await names(things, ("filter", "score:1.5|3")) == {"alpha", "007"}
    assert await names(things, ("filter", "at:2024-01-02T00:00:00+00:00|2024-01-03")) == {"beta", "gamma"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("size:abc", "Bad value 'abc' for column size"),
        ("size:1.5", "Bad value '1.5' for column size"),
        ("size:true", "Bad value 'true' for column size"),
        ("size:99999999999999999999", "Bad value '99999999999999999999' for column size"),
        ("flag:1", "Bad value '1' for column flag"),
        ("score:x", "Bad value 'x' for column score"),
        ("at:yesterday", "Bad value 'yesterday' for column at"),
        ("data:1", "Column data cannot be filtered"),
    ],
)
async def test_a_value_of_the_wrong_kind_is_an_invalid_request(things, value: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await select(things, ("filter", value))


async def test_json_columns_cannot_be_sorted_but_can_be_searched(things) -> None:
    with pytest.raises(InvalidRequest, match="Column data cannot be sorted"):
        await select(things, ("sort", "data"))
    assert await names(things, ("ilike", "data:NEEDLE")) == {"alpha"}


async def test_ilikes_are_or_ed_case_insensitive_and_literal(things) -> None:
    assert await names(things, ("ilike", "name:ALP"), ("ilike", "note:N2")) == {"alpha", "gamma"}
    assert await names(things, ("ilike", "name:DELTA")) == {"delta"}
    # `%` and `_` are the text, not wildcards.
    assert await names(things, ("ilike", "note:0%_o")) == {"007"}
    assert await names(things, ("ilike", "note:n_")) == set()
    # Numbers are searched as their text; an ilike term is AND-ed with the filters.
    assert await names(things, ("ilike", "size:02"), ("filter", "flag:false")) == {"beta", "delta"}


async def test_sorts_apply_in_order_then_the_tiebreak(things) -> None:
    found, _ = await select(things, ("filter", "size:512|768|1024"), ("sort", "size:desc"), ("sort", "score"))
    assert found == ["delta", "beta", "007", "gamma", "alpha"]
    found, _ = await select(things, ("filter", "size:512|1024"), ("sort", "size"))
    assert found == ["alpha", "gamma", "beta", "delta"]  # ties by name


async def test_count_is_taken_before_limit_and_offset(things) -> None:
    assert await select(things, ("sort", "at"), ("limit", "2")) == (["alpha", "beta"], len(ROWS))
    assert await select(things, ("sort", "at"), ("limit", "2"), ("offset", "3")) == (["007", "delta"], len(ROWS))
    assert await select(things, ("filter", "size:512"), ("offset", "5")) == ([], 2)
    found, count = await select(things, ("limit", "-1"))
    assert (len(found), count) == (len(ROWS), len(ROWS))


async def test_the_default_limit_is_100(pool) -> None:
    await pool.execute(
        "CREATE TABLE things AS SELECT 'n' || lpad(i::text, 3, '0') AS name FROM generate_series(1, 150) i"
    )
    rows, count = await fetch_page(pool, SOURCE, (), RestQuery(), {"name": Column("q.name")}, tiebreak="q.name")
    assert (len(rows), count) == (100, 150)
    assert rows[-1]["name"] == "n100"


async def test_source_parameters_come_first(things) -> None:
    source = "SELECT * FROM things WHERE size = $1"
    query = parse_rest_query([("filter", "flag:false")])
    rows, count = await fetch_page(things, source, (1024,), query, COLUMNS, tiebreak="q.name")
    assert ([row["name"] for row in rows], count) == (["beta", "delta"], 2)


async def test_presets_take_the_language_over_enfugue_s_column_names(pool) -> None:
    presets = PgPresetStore(pool)
    for name, checkpoint, size in [("a", "x.safetensors", 512), ("b", "y.ckpt", 1024), ("c", "x.safetensors", 768)]:
        await presets.create(ModelPreset(name=name, checkpoint=checkpoint, size=size, prompt=f"{name} prompt"))
    query = parse_rest_query([("filter", "model:x.safetensors"), ("sort", "size:desc"), ("limit", "1")])
    found, count = await presets.query(query)
    assert ([preset.name for preset in found], count) == (["c"], 2)
    found, count = await presets.query(parse_rest_query([("ilike", "prompt:B PROM")]))
    assert ([preset.name for preset in found], count) == (["b"], 1)
    with pytest.raises(InvalidRequest, match="Unknown column checkpoint"):
        await presets.query(parse_rest_query([("sort", "checkpoint")]))
