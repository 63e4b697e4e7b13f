"""Refuse values the database cannot hold before any route passes them on.

Postgres text and jsonb reject the NUL character, jsonb rejects NaN and Infinity (which Python's json parses), and
every id, count and offset column is at most a bigint, so such a value used to reach the driver and fail the
request with a 500 (found by tests/api/test_hostile_inputs.py on a dozen routes of both dialects). Checking once
here, for every route, is a 400 in the dialect's own format instead. JSON nested deeper than the parser's
recursion limit is refused too (Python's json raises RecursionError, which no route expects).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from serve_app.domain.errors import InvalidRequest

INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]+")
# `\u0000` in a JSON string (an escaped backslash before it, `\\u0000`, is text, not a NUL).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)
_NUL = "NUL characters are not allowed in requests."
_RANGE = "Numbers must lie between -(2^63 - 1) and 2^63 - 1."
_FINITE = "Numbers must be finite (no NaN or Infinity)."


def _check_text(values: list[str]) -> None:
    for value in values:
        if "\x00" in value:
            raise InvalidRequest(_NUL)
        if _INTEGER.fullmatch(value.strip()) and abs(int(value)) > INT64_MAX:
            raise InvalidRequest(_RANGE)


def _check_json(value: Any) -> None:
    """Walk a parsed body (iteratively: the depth is the attacker's) for out-of-range or non-finite numbers."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and abs(item) > INT64_MAX:
            raise InvalidRequest(_RANGE)
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidRequest(_FINITE)
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


async def reject_unstorable(request: Request) -> None:
    """App-wide dependency: path segments, query keys and values, and non-multipart bodies."""
    query = request.query_params.multi_items()
    _check_text([*request.url.path.split("/"), *(key for key, _ in query), *(value for _, value in query)])
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/"):
        return  # uploads are binary; their text fields are checked by the routes that read them
    raw = await request.body()  # cached on the request: the route reads the same bytes
    if not raw:
        return
    if b"\x00" in raw or _NUL_ESCAPE.search(raw):
        raise InvalidRequest(_NUL)
    stripped = raw.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            _check_json(json.loads(stripped))
        except RecursionError:
            raise InvalidRequest("Request body is nested too deeply.") from None
        except ValueError:
            return  # not JSON after all: the route answers that in its own words
    elif content_type.startswith("application/x-www-form-urlencoded"):
        try:
            fields = parse_qsl(raw.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            return
        _check_text([text for pair in fields for text in pair])
