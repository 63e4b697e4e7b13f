"""Background model installs and file downloads (InvokeAI's `ModelInstallJob` / `DownloadJob`, Enfugue's
downloads). Rows live in Postgres so any Ingress replica can answer for a job another one runs."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from serve_app.domain.models import ModelChanges


class InstallStatus(enum.StrEnum):
    WAITING = "waiting"
    DOWNLOADING = "downloading"
    DOWNLOADS_DONE = "downloads_done"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (InstallStatus.COMPLETED, InstallStatus.ERROR, InstallStatus.CANCELLED)


class DownloadStatus(enum.StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def finished(self) -> bool:
        return self in (DownloadStatus.COMPLETED, DownloadStatus.CANCELLED, DownloadStatus.ERROR)


class LocalSource(BaseModel):
    type: Literal["local"] = "local"
    path: str
    inplace: bool = False


class HFSource(BaseModel):
    """A Hugging Face repo, written `org/name[:variant[:subfolder]]` or `org/name::path/in/repo.safetensors`."""

    type: Literal["hf"] = "hf"
    repo_id: str
    variant: str | None = "fp16"
    subfolder: str | None = None
    access_token: str | None = None


class URLSource(BaseModel):
    type: Literal["url"] = "url"
    url: str
    access_token: str | None = None


ModelSource = Annotated[LocalSource | HFSource | URLSource, Field(discriminator="type")]


class DownloadJob(BaseModel):
    """One file fetched over HTTP(S) into `dest` (a folder). Access tokens are never stored."""

    id: int
    source: str  # the URL
    dest: str
    download_path: str | None = None  # the file once its name is known
    status: DownloadStatus = DownloadStatus.WAITING
    bytes: int = 0
    total_bytes: int = 0
    priority: int = 10  # lower runs sooner
    error_type: str | None = None
    error: str | None = None
    content_type: str | None = None
    job_started: datetime | None = None
    job_ended: datetime | None = None
    # The install this download is a part of, if any; None for InvokeAI download-queue and Enfugue downloads.
    install_job_id: int | None = None
    # Expected hex sha256 of the file, checked before it is kept (None: not checked).
    sha256: str | None = None
    # Enfugue's download fields: which models folder it goes to, and who asked.
    kind: str | None = None
    owner: str = "admin"


class InstallJob(BaseModel):
    """One model install: a local path registered (copied unless in place), or downloaded parts then registered."""

    id: int
    status: InstallStatus = InstallStatus.WAITING
    source: ModelSource
    inplace: bool = False
    config_in: ModelChanges = Field(default_factory=ModelChanges)
    config_out_key: str | None = None  # the registered model's key once completed
    local_path: str = ""
    bytes: int = 0
    total_bytes: int = 0
    source_metadata: dict[str, Any] | None = None
    error_reason: str | None = None
    error: str | None = None
    error_traceback: str | None = None
    download_parts: list[DownloadJob] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
