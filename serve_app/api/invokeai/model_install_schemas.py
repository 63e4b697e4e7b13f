"""InvokeAI's wire shapes of install and download jobs (reference §3.10; goldens 07, 08, 09, 87)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from serve_app.domain.model_jobs import DownloadJob, DownloadStatus, InstallJob, InstallStatus
from serve_app.domain.models import ModelChanges
from serve_app.services.model_configs import AnyModelConfig, ModelConfigBase
from serve_app.services.model_sources import wire_source


def _timestamp(value: datetime | None) -> str | None:
    # InvokeAI stamps downloads with datetime.isoformat() strings.
    return None if value is None else value.astimezone(UTC).isoformat()


class DownloadJobOut(BaseModel):
    """`DownloadJob`, fields in InvokeAI's order; access tokens are never shown."""

    id: int
    dest: str
    download_path: str | None = None
    status: DownloadStatus
    bytes: int = 0
    total_bytes: int = 0
    error_type: str | None = None
    error: str | None = None
    source: str
    access_token: str | None = None
    priority: int = 10
    job_started: str | None = None
    job_ended: str | None = None
    content_type: str | None = None

    @classmethod
    def from_domain(cls, job: DownloadJob) -> DownloadJobOut:
        return cls(
            id=job.id,
            dest=job.dest,
            download_path=job.download_path,
            status=job.status,
            bytes=job.bytes,
            total_bytes=job.total_bytes,
            error_type=job.error_type,
            error=job.error,
            source=job.source,
            priority=job.priority,
            job_started=_timestamp(job.job_started),
            job_ended=_timestamp(job.job_ended),
            content_type=job.content_type,
        )


class ModelInstallJobOut(BaseModel):
    """`ModelInstallJob`, fields in InvokeAI's order; `source` as InvokeAI dumps it (type last)."""

    id: int
    status: InstallStatus
    error_reason: str | None = None
    config_in: ModelChanges
    config_out: AnyModelConfig | None = None
    inplace: bool = False
    source: dict[str, Any]
    local_path: str
    bytes: int = 0
    total_bytes: int = 0
    source_metadata: dict[str, Any] | None = None
    download_parts: list[DownloadJobOut] = Field(default_factory=list)
    error: str | None = None
    error_traceback: str | None = None

    @classmethod
    def from_domain(cls, job: InstallJob, config_out: ModelConfigBase | None) -> ModelInstallJobOut:
        return cls.model_validate(
            {
                "id": job.id,
                "status": job.status,
                "error_reason": job.error_reason,
                "config_in": job.config_in,
                "config_out": config_out,
                "inplace": job.inplace,
                "source": wire_source(job.source),
                "local_path": job.local_path,
                "bytes": job.bytes,
                "total_bytes": job.total_bytes,
                "source_metadata": job.source_metadata,
                "download_parts": [DownloadJobOut.from_domain(part) for part in job.download_parts],
                "error": job.error,
                "error_traceback": job.error_traceback,
            }
        )


class HuggingFaceModels(BaseModel):
    urls: list[str] | None = Field(description="URLs for all checkpoint format models in the metadata")
    is_diffusers: bool = Field(description="Whether the metadata is for a Diffusers format model")


class DownloadRequest(BaseModel):
    """`POST /api/v1/download_queue/i/` (InvokeAI's `Body_download`)."""

    source: str = Field(min_length=1, description="download source")
    dest: str = Field(description="download destination")
    priority: int = Field(default=10, description="queue priority")
    access_token: str | None = Field(default=None, description="token for authorization to download")


class HfLogin(BaseModel):
    token: str = Field(description="Hugging Face token to use for login")
