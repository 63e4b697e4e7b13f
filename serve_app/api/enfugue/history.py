"""Enfugue's `GET /api/invocation-history[/{id}]`: a generic REST listing (domain/rest_query.py) of the caller's
own invocations, as Enfugue's `DiffusionInvocation` objects.

Enfugue injects `user_id = <caller>` into the query; here the owner scope lives in the store's SQL, below
anything a `filter` can say, so no query string can reach another user's history. `data` is always a list,
`meta.count` the total before limit and offset.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serve_app.api.deps import HistoryDep, OwnerDep
from serve_app.api.enfugue.routes import envelope
from serve_app.domain.errors import InvalidRequest
from serve_app.domain.ports import HistoryEntry
from serve_app.domain.rest_query import RestQuery, parse_rest_query

router = APIRouter(prefix="/api", tags=["enfugue"])


def history_object(entry: HistoryEntry) -> dict[str, Any]:
    """An invocation as Enfugue's ORM object; `started` as Enfugue prints it (naive UTC, ISO 8601)."""
    attributes = {
        "duration": entry.duration,
        "error": entry.error,
        "id": entry.id,
        "outputs": entry.outputs,
        "plan": entry.plan,
        "started": entry.started.astimezone(UTC).replace(tzinfo=None).isoformat(),
        "user_id": entry.user_id,
    }
    return {"type": "DiffusionInvocation", "attributes": attributes}


def _query(request: Request) -> RestQuery:
    query = parse_rest_query(request.query_params.multi_items())
    if query.includes:
        # DiffusionInvocation has no relationship an API caller may include.
        raise InvalidRequest(f"Unknown or bad relationship {query.includes[0]}", field="include")
    return query


@router.get("/invocation-history", summary="The caller's invocation history")
async def list_history(request: Request, history: HistoryDep, owner: OwnerDep) -> JSONResponse:
    entries, count = await history.query(owner, _query(request))
    return envelope(request, [history_object(entry) for entry in entries], count=count)


@router.get("/invocation-history/{invocation_id}", summary="One invocation of the caller (as a one-element list)")
async def get_history(request: Request, invocation_id: str, history: HistoryDep, owner: OwnerDep) -> JSONResponse:
    entries, count = await history.get(owner, invocation_id, _query(request))
    return envelope(request, [history_object(entry) for entry in entries], count=count)
