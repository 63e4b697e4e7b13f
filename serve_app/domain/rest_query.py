"""Enfugue's generic REST query language (enfugue-api.md §4) as a typed value.

`GET /api/models`, `/api/users` and `/api/invocation-history` take the same query parameters:

- `filter=col:v1|v2` (repeatable; AND-ed): the column equals one of the values. The column part may be `a|b`
  (any of the columns matches) or `a+b` (all of them match), and a leading `!` negates the whole condition.
  Each value is deserialized as Enfugue's Serializer does: "1" → 1, "1.5" → 1.5, "null" → None, "true" and
  "false" → bools, anything else stays a string.
- `ilike=col:text` (repeatable; OR-ed): the column contains `text`, case-insensitively.
- `sort=col`, `sort=col:asc`, `sort=col:desc` (repeatable; applied in order).
- `limit` (default 100; 0 or less: no limit), `offset` (default 0).
- `include=relation` (repeatable; the route checks the names), `show` (accepted and ignored: we hide nothing).

Parsing only checks the forms; which columns exist is the compiler's business (storage/rest_query_sql.py), so a
bad form and an unknown column both end as InvalidRequest (400; Enfugue answers 500 to an unknown column).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from enum import StrEnum

from serve_app.domain.errors import InvalidRequest

Scalar = str | int | float | bool | None

DEFAULT_LIMIT = 100
_MAX_INTEGER = 2**63 - 1
_PARAMS = frozenset({"filter", "ilike", "sort", "limit", "offset", "include"})
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?|-?[0-9]+[eE][-+]?[0-9]+")


class Join(StrEnum):
    """How a condition over several columns combines them: `a|b` is ANY, `a+b` is ALL."""

    ANY = "any"
    ALL = "all"


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """One `filter`: (NOT if negate) (column₁ ∈ values) ANY/ALL (column₂ ∈ values) ...

    `values` are deserialized; `raw` keeps the text of each (same order) for text columns, so `name:007`
    matches the name "007" rather than 7."""

    columns: tuple[str, ...]
    values: tuple[Scalar, ...]
    raw: tuple[str, ...]
    join: Join = Join.ANY
    negate: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Ilike:
    """One `ilike`: the column contains `text` (already lowercased), case-insensitively."""

    column: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Sort:
    column: str
    descending: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class RestQuery:
    """A parsed query string: `filters` are AND-ed, `ilikes` OR-ed (as one more AND-ed term), `sorts` in order.
    `limit` None means no limit."""

    filters: tuple[Condition, ...] = ()
    ilikes: tuple[Ilike, ...] = ()
    sorts: tuple[Sort, ...] = ()
    limit: int | None = DEFAULT_LIMIT
    offset: int = 0
    includes: tuple[str, ...] = ()

    def where(self, column: str, value: Scalar) -> RestQuery:
        """This query with one more equality condition (a scoped GET's `name=foo`)."""
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        condition = Condition(columns=(column,), values=(value,), raw=(text,))
        return dataclasses.replace(self, filters=(*self.filters, condition))


def deserialize(text: str) -> Scalar:
    """Enfugue's Serializer.deserialize for a query value: numbers, null and booleans; else the text."""
    if text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _split(param: str, text: str) -> tuple[str, str]:
    column, sep, value = text.partition(":")
    if not sep or not column:
        raise InvalidRequest(f"`{param}` must look like column:value, not {text!r}", field=param)
    return column, value


def _condition(text: str) -> Condition:
    columns, value = _split("filter", text)
    negate = columns.startswith("!")
    columns = columns.removeprefix("!")
    # `+` arrives as a space when a client does not percent-encode it (form decoding); column names have none.
    columns = columns.replace(" ", "+")
    if "|" in columns and "+" in columns:
        raise InvalidRequest(f"`filter` cannot mix `|` and `+` in {text!r}", field="filter")
    join = Join.ALL if "+" in columns else Join.ANY
    names = tuple(re.split(r"[|+]", columns))
    raw = tuple(value.split("|"))
    return Condition(columns=names, values=tuple(deserialize(part) for part in raw), raw=raw, join=join, negate=negate)


def _sort(text: str) -> Sort:
    column, sep, direction = text.partition(":")
    if sep and direction.lower() not in ("asc", "desc"):
        raise InvalidRequest(f"`sort` direction must be asc or desc, not {direction!r}", field="sort")
    return Sort(column=column, descending=direction.lower() == "desc")


def _integer(param: str, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise InvalidRequest(f"`{param}` must be an integer, not {text!r}", field=param) from None
    # Limits and offsets are bound as bigint.
    if abs(number) > _MAX_INTEGER:
        raise InvalidRequest(f"`{param}` is out of range", field=param)
    return number


def parse_rest_query(params: Iterable[tuple[str, str]]) -> RestQuery:
    """Parse query parameters (repeated keys in order, e.g. Starlette's `query_params.multi_items()`).

    Other parameters are ignored, as Enfugue ignores them. Raise InvalidRequest for a malformed one."""
    filters: list[Condition] = []
    ilikes: list[Ilike] = []
    sorts: list[Sort] = []
    includes: list[str] = []
    limit: int | None = DEFAULT_LIMIT
    offset = 0
    for key, value in params:
        if key in _PARAMS and "\x00" in value:
            # Postgres text cannot hold NUL; refuse it here rather than fail in the database.
            raise InvalidRequest(f"`{key}` must not contain NUL characters", field=key)
        if key == "filter":
            filters.append(_condition(value))
        elif key == "ilike":
            column, text = _split("ilike", value)
            ilikes.append(Ilike(column=column, text=text.lower()))
        elif key == "sort":
            sorts.append(_sort(value))
        elif key == "limit":
            number = _integer("limit", value)
            limit = number if number > 0 else None
        elif key == "offset":
            offset = _integer("offset", value)
            if offset < 0:
                raise InvalidRequest("`offset` must not be negative", field="offset")
        elif key == "include" and value not in includes:
            includes.append(value)
    return RestQuery(
        filters=tuple(filters),
        ilikes=tuple(ilikes),
        sorts=tuple(sorts),
        limit=limit,
        offset=offset,
        includes=tuple(includes),
    )
