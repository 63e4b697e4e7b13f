"""Parsing Enfugue's generic REST query parameters (enfugue-api.md §4) into a RestQuery."""

from __future__ import annotations

import pytest

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.rest_query import Condition, Ilike, Join, RestQuery, Sort, deserialize, parse_rest_query


def parse(*params: tuple[str, str]) -> RestQuery:
    return parse_rest_query(params)


def test_defaults_are_enfugue_s() -> None:
    assert parse() == RestQuery(limit=100, offset=0)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("-12", -12),
        ("1.5", 1.5),
        ("2e3", 2000.0),
        ("null", None),
        ("true", True),
        ("false", False),
        ("True", "True"),
        ("", ""),
        ("1.2.3", "1.2.3"),
        ("nan", "nan"),
        ("a'b", "a'b"),
    ],
)
def test_values_are_deserialized_as_enfugue_s_serializer(text: str, value: object) -> None:
    result = deserialize(text)
    assert result == value
    assert type(result) is type(value)


def test_a_filter_ors_its_values_and_keeps_their_text() -> None:
    query = parse(("filter", "size:512|1024|null|Realistic"))
    assert query.filters == (
        Condition(columns=("size",), values=(512, 1024, None, "Realistic"), raw=("512", "1024", "null", "Realistic")),
    )


def test_a_value_keeps_colons_after_the_first() -> None:
    [condition] = parse(("filter", "name:a:b")).filters
    assert condition.values == ("a:b",)


@pytest.mark.parametrize(
    ("text", "columns", "join", "negate"),
    [
        ("a|b:1", ("a", "b"), Join.ANY, False),
        ("a+b:1", ("a", "b"), Join.ALL, False),
        # An unencoded `+` arrives as a space after form decoding.
        ("a b:1", ("a", "b"), Join.ALL, False),
        ("!a:1", ("a",), Join.ANY, True),
        ("!a|b:1", ("a", "b"), Join.ANY, True),
    ],
)
def test_column_forms(text: str, columns: tuple[str, ...], join: Join, negate: bool) -> None:
    [condition] = parse(("filter", text)).filters
    assert (condition.columns, condition.join, condition.negate) == (columns, join, negate)


def test_filters_sorts_and_includes_keep_their_order() -> None:
    query = parse(
        ("sort", "size:desc"),
        ("filter", "a:1"),
        ("include", "vae"),
        ("sort", "name"),
        ("filter", "b:2"),
        ("sort", "prompt:ASC"),
        ("include", "lora"),
        ("include", "vae"),
    )
    assert [condition.columns for condition in query.filters] == [("a",), ("b",)]
    assert query.sorts == (Sort("size", descending=True), Sort("name"), Sort("prompt"))
    assert query.includes == ("vae", "lora")


def test_ilike_lowercases_its_text() -> None:
    query = parse(("ilike", "name:ReAl"), ("ilike", "prompt:Dog%"))
    assert query.ilikes == (Ilike("name", "real"), Ilike("prompt", "dog%"))


@pytest.mark.parametrize(("limit", "expected"), [("10", 10), ("1", 1), ("0", None), ("-5", None)])
def test_limit_of_zero_or_less_means_none(limit: str, expected: int | None) -> None:
    assert parse(("limit", limit)).limit == expected


def test_offset_and_the_last_repeated_limit_win() -> None:
    query = parse(("limit", "5"), ("limit", "7"), ("offset", "3"))
    assert (query.limit, query.offset) == (7, 3)


def test_other_parameters_are_ignored() -> None:
    assert parse(("show", "password"), ("x", "y")) == RestQuery()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("filter", "novalue", "column:value"),
        ("filter", ":x", "column:value"),
        ("filter", "a|b+c:1", "cannot mix"),
        ("ilike", "name", "column:value"),
        ("sort", "name:up", "asc or desc"),
        ("limit", "ten", "integer"),
        ("offset", "1.5", "integer"),
        ("offset", "-1", "negative"),
        ("offset", str(2**63), "out of range"),
        ("limit", str(-(2**64)), "out of range"),
        ("filter", "name:a\x00b", "NUL"),
        ("ilike", "name:\x00", "NUL"),
    ],
)
def test_bad_forms_are_invalid_requests(key: str, value: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as caught:
        parse((key, value))
    assert caught.value.field == key


def test_where_adds_an_equality_condition_after_the_others() -> None:
    query = parse(("filter", "a:1")).where("id", "abc").where("flag", True).where("gone", None)
    assert query.filters[1:] == (
        Condition(columns=("id",), values=("abc",), raw=("abc",)),
        Condition(columns=("flag",), values=(True,), raw=("true",)),
        Condition(columns=("gone",), values=(None,), raw=("null",)),
    )
