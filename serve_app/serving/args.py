"""AppArgs: the typed arguments of `build_app`, also the `args:` block of a Serve config file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serve_app import __version__
from serve_app.domain.generation import Limits
from serve_app.settings import Settings


class StorageArgs(BaseModel):
    """Where images go."""

    model_config = ConfigDict(frozen=True)

    url: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


class DiffusionArgs(BaseModel):
    """What a Diffusion replica needs."""

    model_config = ConfigDict(frozen=True)

    models_dir: str
    default_model: str
    storage: StorageArgs
    torch_threads: int = Field(default=1, ge=1, description="CPU threads per replica when there is no GPU.")
    progress_interval: float = Field(default=0.1, gt=0, description="Seconds between progress reports.")
    # Empty: the Queue's (build_app fills it in). Replicas use it only to report cache stats and hear
    # `empty_model_cache`; jobs and models reach them with each request.
    database_url: str = ""
    cache_ram_gb: float = Field(default=8.0, gt=0, description="RAM for loaded models per replica.")
    cache_vram_gb: float | None = Field(
        default=None, gt=0, description="VRAM for loaded models per replica; unset: 90% of the GPU's memory."
    )


class QueueArgs(BaseModel):
    """What a Queue replica needs."""

    model_config = ConfigDict(frozen=True)

    database_url: str
    models_dir: str
    default_model: str
    storage: StorageArgs
    limits: Limits = Limits()
    max_attempts: int = Field(default=3, ge=1)
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval: float = Field(default=1.0, gt=0)
    max_in_flight: int = Field(default=4, ge=1, description="Jobs one Queue replica hands to Diffusion at once.")
    migrate: bool = Field(default=True, description="Apply Alembic migrations when a replica starts.")


class IngressArgs(BaseModel):
    """What an Ingress replica needs: InvokeAI's queue, images and events read Postgres directly."""

    model_config = ConfigDict(frozen=True)

    storage: StorageArgs
    # Empty: the Queue's (build_app fills it in, so a config file names the database once).
    database_url: str = ""
    models_dir: str = ""
    default_model: str = ""
    max_body_bytes: int = 32 * 1024 * 1024
    # Folders besides models_dir that local model installs and folder scans may read.
    model_import_roots: list[str] = []
    max_queue_size: int = Field(default=10000, ge=1, description="Pending InvokeAI queue items accepted at most.")
    # The Queue's waiting-jobs limit (build_app fills it in from QueueArgs.limits).
    max_waiting_jobs: int = Field(default=256, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    version: str = __version__
    # Accounts: with auth every API request needs a token. The first admin (created while no user exists) is named
    # here; their password stays in the environment (SERVE_APP_ADMIN_PASSWORD), out of Ray's deployment config.
    auth: bool = False
    admin_username: str = "admin"


class AppArgs(BaseModel):
    """Everything `build_app` needs; built from Settings locally or read from a Serve config file."""

    model_config = ConfigDict(frozen=True)

    queue: QueueArgs
    diffusion: DiffusionArgs
    ingress: IngressArgs

    @classmethod
    def from_settings(cls, settings: Settings, *, database_url: str) -> AppArgs:
        storage = StorageArgs(
            url=settings.resolved_storage_url(),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
        models_dir = str(settings.resolved_models_dir())
        limits = Limits(
            max_width=settings.max_width,
            max_height=settings.max_height,
            max_pixels=settings.max_pixels,
            max_steps=settings.max_steps,
            max_images_per_job=settings.max_images_per_job,
            max_waiting_jobs=settings.max_waiting_jobs,
        )
        return cls(
            queue=QueueArgs(
                database_url=database_url,
                models_dir=models_dir,
                default_model=settings.default_model,
                storage=storage,
                limits=limits,
                max_attempts=settings.max_attempts,
                lease_seconds=settings.lease_seconds,
            ),
            diffusion=DiffusionArgs(
                models_dir=models_dir,
                default_model=settings.default_model,
                storage=storage,
                cache_ram_gb=settings.model_cache_ram_gb,
                cache_vram_gb=settings.model_cache_vram_gb,
            ),
            ingress=IngressArgs(
                storage=storage,
                database_url=database_url,
                models_dir=models_dir,
                default_model=settings.default_model,
                max_body_bytes=settings.max_body_bytes,
                max_attempts=settings.max_attempts,
                model_import_roots=[str(root.resolve()) for root in settings.model_import_roots],
                auth=settings.auth,
                admin_username=settings.admin_username,
            ),
        )
