"""Enfugue's settings, announcements and logs (enfugue-api.md §9, §10.4).

`/api/settings` reads and writes SettingsService (the queue and download limits take effect, unlike Enfugue
0.2.x). There are no announcements to make (no first-run downloads, no update checks), so the list is always
empty; snoozing is stored all the same. `/api/logs` reads this Ingress replica's in-memory log buffer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from serve_app.api.deps import AdminDep, ApiContext, ContextDep, SettingsDep
from serve_app.api.enfugue.routes import envelope, json_object
from serve_app.api.log_buffer import LogBuffer
from serve_app.domain.errors import InvalidRequest

router = APIRouter(prefix="/api", tags=["enfugue"])


def get_log_buffer(request: Request) -> LogBuffer:
    buffer = request.app.state.log_buffer
    assert isinstance(buffer, LogBuffer)
    return buffer


LogBufferDep = Annotated[LogBuffer, Depends(get_log_buffer)]


@router.get("/settings", summary="Server settings", dependencies=[AdminDep])
async def get_settings(request: Request, context: ContextDep, settings: SettingsDep) -> JSONResponse:
    return envelope(request, await _effective(context, await settings.get()))


@router.post(
    "/settings",
    summary="Change some server settings (posting `auth` logs every session out; API keys stay)",
    dependencies=[AdminDep],
)
async def post_settings(request: Request, context: ContextDep, settings: SettingsDep) -> JSONResponse:
    return envelope(request, await _effective(context, await settings.update(await json_object(request))))


async def _effective(context: ApiContext, values: dict[str, Any]) -> dict[str, Any]:
    # `auth` as requests see it (the deployment's SERVE_APP_AUTH until one is posted), whatever default the
    # settings service was built with.
    return {**values, "auth": await context.auth_active()}


@router.get("/announcements", summary="Announcements (none on this server)")
async def announcements(request: Request) -> JSONResponse:
    return envelope(request, [])


@router.post("/announcements/snooze", summary="Dismiss announcements")
async def snooze(request: Request, context: ContextDep, settings: SettingsDep) -> JSONResponse:
    await settings.snooze(context.version)
    return envelope(request, None)


@router.get("/logs", summary="This replica's recent log records, newest first")
async def logs(
    request: Request,
    buffer: LogBufferDep,
    since: str | None = None,
    level: Annotated[list[str] | None, Query()] = None,
    logger: Annotated[list[str] | None, Query()] = None,
    search: str | None = None,
) -> JSONResponse:
    entries = buffer.entries(since=_parse_since(since), levels=level or (), loggers=logger or (), search=search)
    return envelope(request, [entry.to_json() for entry in entries])


def _parse_since(value: str | None) -> datetime | None:
    """An ISO 8601 time (`2026-11-21 09:30:00`, `...T09:30:00+01:00`; naive means UTC) or Unix seconds."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"`since` is not a date and time: {value!r}", field="since") from None
