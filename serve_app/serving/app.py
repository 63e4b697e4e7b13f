"""build_app: Ingress → Queue → Diffusion, composed with handles. The `import_path` of every Serve config."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve_app.serving.args import AppArgs, DiffusionArgs, IngressArgs
from serve_app.serving.diffusion import Diffusion
from serve_app.serving.ingress import Ingress
from serve_app.serving.queue import Queue
from serve_app.settings import get_settings


def resolve_args(args: dict[str, Any] | AppArgs | None) -> AppArgs:
    """Config-file args over settings from the environment (secrets such as the database URL stay in env)."""
    if isinstance(args, AppArgs):
        return args
    settings = get_settings()
    if not settings.database_url and not (args or {}).get("queue", {}).get("database_url"):
        raise ValueError("SERVE_APP_DATABASE_URL must be set when the app is deployed from a config file")
    base = AppArgs.from_settings(settings, database_url=settings.database_url or "").model_dump()
    return AppArgs.model_validate(_deep_merge(base, args or {}))


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Application:
    """The whole application graph; deployment sizing comes from the Serve config file."""
    resolved = resolve_args(args)
    diffusion = Diffusion.bind(diffusion_args(resolved))
    queue = Queue.bind(resolved.queue, diffusion)
    return Ingress.bind(ingress_args(resolved), queue)


def ingress_args(args: AppArgs) -> IngressArgs:
    """The Ingress's args with what it shares with the Queue (database, models) filled in where left empty."""
    ingress, queue = args.ingress, args.queue
    return ingress.model_copy(
        update={
            "database_url": ingress.database_url or queue.database_url,
            "models_dir": ingress.models_dir or queue.models_dir,
            "default_model": ingress.default_model or queue.default_model,
            "max_waiting_jobs": queue.limits.max_waiting_jobs,
        }
    )


def diffusion_args(args: AppArgs) -> DiffusionArgs:
    """The Diffusion replicas' args with the Queue's database filled in where left empty."""
    return args.diffusion.model_copy(update={"database_url": args.diffusion.database_url or args.queue.database_url})


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
