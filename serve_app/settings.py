"""Settings: the only module that reads the environment. Read once, then passed down as plain values."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a serve-app process, from `SERVE_APP_*` variables (or a `.env` file)."""

    model_config = SettingsConfigDict(env_prefix="SERVE_APP_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Root for the embedded database, files and models.")
    database_url: str | None = Field(
        default=None, description="Postgres URL; unset means an embedded PostgreSQL under the data dir."
    )
    storage_url: str | None = Field(
        default=None, description="file:///path or s3://bucket/prefix; unset means files under the data dir."
    )
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    models_dir: Path | None = Field(default=None, description="Unset means <data dir>/models.")
    model_import_roots: list[Path] = Field(
        default=[], description="Extra folders local model installs and folder scans may read (besides models_dir)."
    )
    default_model: str = "demo-sd15"

    host: str = "127.0.0.1"
    port: int = 8000

    max_width: int = 2048
    max_height: int = 2048
    max_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_images_per_job: int = 16
    max_waiting_jobs: int = 256
    max_body_bytes: int = 32 * 1024 * 1024

    model_cache_ram_gb: float = Field(default=8.0, gt=0, description="RAM for loaded models per Diffusion replica.")
    model_cache_vram_gb: float | None = Field(
        default=None, gt=0, description="VRAM for loaded models per Diffusion replica; unset: 90% of the GPU."
    )

    max_attempts: int = 3
    lease_seconds: float = 30.0

    auth: bool = Field(default=False, description="Require a login token or API key on every API request.")
    admin_username: str = Field(
        default="admin", description="The first admin, created when auth is on and no user exists."
    )
    admin_password: str = Field(default="", description="That admin's password (needed only to create them).")

    @field_validator("database_url")
    @classmethod
    def _normalize_scheme(cls, value: str | None) -> str | None:
        # asyncpg speaks plain postgresql://; accept the SQLAlchemy and Heroku spellings too.
        if value is None or value == "":
            return None
        for prefix in ("postgresql+asyncpg://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql://" + value[len(prefix) :]
        return value

    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "files").resolve().as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
