"""InvokeAI routes. For now only what lets InvokeAI clients detect the server."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(prefix="/api/v1", tags=["invokeai"])

# The InvokeAI API version this server speaks; clients gate features on it.
INVOKEAI_API_VERSION = "6.8.1"


class AppVersion(BaseModel):
    version: str
    highlights: list[str] | None = None


@router.get("/app/version", operation_id="app_version", response_model=AppVersion)
async def app_version() -> AppVersion:
    return AppVersion(version=INVOKEAI_API_VERSION, highlights=None)
