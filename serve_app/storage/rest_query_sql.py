"""Compile a RestQuery (domain/rest_query.py) to SQL over a whitelist of columns, with bound parameters only.

Reuse (how `/api/models` and `/api/invocation-history` do it, and how `/api/users` should):

    COLUMNS = {"name": Column("q.name"), "size": Column("q.size", ColumnKind.INTEGER), ...}
    rows, count = await fetch_page(pool, SOURCE, (owner,), query, COLUMNS, tiebreak="q.name")

`SOURCE` is a literal SELECT (from a sql/*.sql file) that already applies every scope the caller may not lift (the
owner, the dialect); its own parameters are `$1..$k`, passed as the third argument. It is wrapped as
`(SOURCE) AS q`, so the whitelist maps each API column name to a literal SQL expression over `q`. The query's
filters only ever add terms with `$k+1...` parameters: a value is never part of the SQL text, and a column name
outside the whitelist is InvalidRequest "Unknown column x" (Enfugue answers 500). `compile_query` alone gives the
fragments for callers that build their own statement.

Semantics beyond enfugue-api.md §4, chosen deliberately:
- A negated condition (`!col:x`) also matches rows where the column is NULL ("not x"), unlike SQL's `col != x`.
- `ilike` matches its text literally: `%`, `_` and `\\` in it are escaped, not wildcards.
- The column's kind decides how a value is compared: a text column compares the value as sent (`name:007` is the
  text "007"), a number column needs a number, a timestamp column an ISO date. A value of the wrong kind is 400.
- Rows are ordered by the sorts, then by `tiebreak` (a unique key), so pages never overlap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, LiteralString

import asyncpg

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.rest_query import Condition, Join, RestQuery, Scalar


class ColumnKind(StrEnum):
    TEXT = "text"
    INTEGER = "bigint"
    NUMBER = "double precision"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamptz"
    # JSON can be searched with `ilike` (as text) only; filtering or sorting on it is 400.
    JSON = "jsonb"


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """An API column: a literal SQL expression and the kind of its values."""

    sql: LiteralString
    kind: ColumnKind = ColumnKind.TEXT


Columns = Mapping[str, Column]

# The cast on each placeholder pins the parameter's type, so asyncpg never guesses from the context.
_CASTS: dict[ColumnKind, LiteralString] = {
    ColumnKind.TEXT: "::text",
    ColumnKind.INTEGER: "::bigint",
    ColumnKind.NUMBER: "::double precision",
    ColumnKind.BOOLEAN: "::boolean",
    ColumnKind.TIMESTAMP: "::timestamptz",
}


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledQuery:
    """SQL fragments of one query. `where` is a boolean expression (TRUE when unconstrained) using
    `where_params`; `page` is `LIMIT $i OFFSET $j` using `page_params`, numbered after them."""

    where: LiteralString
    order_by: LiteralString
    page: LiteralString
    where_params: tuple[Any, ...]
    page_params: tuple[Any, ...]


class _Params:
    """Bound parameters numbered from `first`; `add` returns the placeholder (literal: only digits vary)."""

    def __init__(self, first: int) -> None:
        self._first = first
        self.values: list[Any] = []

    def add(self, value: Any, cast: LiteralString) -> LiteralString:
        self.values.append(value)
        return f"${self._first + len(self.values) - 1}{cast}"


def _column(columns: Columns, name: str, param: str) -> Column:
    column = columns.get(name)
    if column is None:
        raise InvalidRequest(f"Unknown column {name}", field=param)
    return column


def _typed(value: Scalar, raw: str, kind: ColumnKind, name: str) -> Any:
    """The value as the column's kind, or InvalidRequest."""
    if kind is ColumnKind.TEXT:
        return raw
    if kind is ColumnKind.BOOLEAN and isinstance(value, bool):
        return value
    if kind is ColumnKind.INTEGER and isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    if kind is ColumnKind.NUMBER and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is ColumnKind.TIMESTAMP:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    raise InvalidRequest(f"Bad value {raw!r} for column {name} ({kind.name.lower()})", field="filter")


def _matches(condition: Condition, name: str, column: Column, params: _Params) -> LiteralString:
    if column.kind is ColumnKind.JSON:
        raise InvalidRequest(f"Column {name} cannot be filtered", field="filter")
    terms: list[LiteralString] = []
    for value, raw in zip(condition.values, condition.raw, strict=True):
        if value is None:
            terms.append(f"{column.sql} IS NULL")
        else:
            placeholder = params.add(_typed(value, raw, column.kind, name), _CASTS[column.kind])
            terms.append(f"{column.sql} = {placeholder}")
    return "(" + " OR ".join(terms) + ")"


def _condition(condition: Condition, columns: Columns, params: _Params) -> LiteralString:
    parts = [_matches(condition, name, _column(columns, name, "filter"), params) for name in condition.columns]
    joined = (" AND " if condition.join is Join.ALL else " OR ").join(parts)
    # NULL compares as unknown; coalesce makes "not x" include rows whose column is NULL.
    return f"(NOT coalesce(({joined}), false))" if condition.negate else f"({joined})"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def compile_query(
    query: RestQuery, columns: Columns, *, tiebreak: LiteralString, first_param: int = 1
) -> CompiledQuery:
    """Compile `query` over `columns` (API name → Column); parameters are numbered from `first_param`.
    Raise InvalidRequest for an unknown column or a value of the wrong kind."""
    params = _Params(first_param)
    terms = [_condition(condition, columns, params) for condition in query.filters]
    if query.ilikes:
        likes: list[LiteralString] = []
        for ilike in query.ilikes:
            column = _column(columns, ilike.column, "ilike")
            text: LiteralString = column.sql if column.kind is ColumnKind.TEXT else f"({column.sql})::text"
            likes.append(f"{text} ILIKE {params.add('%' + _escape_like(ilike.text) + '%', '::text')}")
        terms.append("(" + " OR ".join(likes) + ")")
    order: list[LiteralString] = []
    for sort in query.sorts:
        column = _column(columns, sort.column, "sort")
        if column.kind is ColumnKind.JSON:
            raise InvalidRequest(f"Column {sort.column} cannot be sorted", field="sort")
        order.append(f"{column.sql} {'DESC' if sort.descending else 'ASC'}")
    order.append(tiebreak)
    where_params = tuple(params.values)
    # LIMIT NULL is no limit in Postgres.
    page = f"LIMIT {params.add(query.limit, '::bigint')} OFFSET {params.add(query.offset, '::bigint')}"
    return CompiledQuery(
        where=" AND ".join(terms) if terms else "TRUE",
        order_by="ORDER BY " + ", ".join(order),
        page=page,
        where_params=where_params,
        page_params=tuple(params.values[len(where_params) :]),
    )


async def fetch_page(
    pool: asyncpg.Pool,
    source: LiteralString,
    source_params: Sequence[Any],
    query: RestQuery,
    columns: Columns,
    *,
    tiebreak: LiteralString,
) -> tuple[list[asyncpg.Record], int]:
    """The rows of `(source) AS q` that `query` selects, and how many match before limit and offset
    (Enfugue's meta.count). Both statements read one snapshot."""
    compiled = compile_query(query, columns, tiebreak=tiebreak, first_param=len(source_params) + 1)
    matching: LiteralString = f"FROM ({source}) AS q WHERE {compiled.where}"
    rows_sql: LiteralString = f"SELECT q.* {matching} {compiled.order_by} {compiled.page}"
    count_sql: LiteralString = f"SELECT count(*) {matching}"
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(rows_sql, *source_params, *compiled.where_params, *compiled.page_params)
        count = await conn.fetchval(count_sql, *source_params, *compiled.where_params)
    return list(rows), int(count)
