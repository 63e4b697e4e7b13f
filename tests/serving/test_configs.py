"""The Serve config files are valid, name our deployments, and build the app with their args."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.serving.app import build_app, diffusion_args, ingress_args, resolve_args
from serve_app.serving.args import AppArgs
from serve_app.settings import Settings

CONFIGS = sorted((Path(__file__).parents[2] / "deployments").glob("*.yaml"))
DEPLOYMENTS = {"Ingress", "Queue", "Diffusion"}


def test_both_configs_exist():
    assert {path.name for path in CONFIGS} >= {"local.yaml", "production.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_a_valid_serve_config_for_our_graph(path: Path, monkeypatch):
    raw = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    [app] = schema.applications
    assert app.import_path == "serve_app.serving.app:build_app"
    # ServeDeploySchema accepts unknown deployment names silently; a typo would configure nothing.
    assert {deployment.name for deployment in app.deployments} == DEPLOYMENTS
    monkeypatch.setenv("SERVE_APP_DATABASE_URL", "postgres://u:p@db.example:5432/serve")
    from serve_app.settings import get_settings

    get_settings.cache_clear()
    try:
        args = resolve_args(app.args)
        assert args.queue.database_url == "postgresql://u:p@db.example:5432/serve"
        assert build_app(app.args) is not None
    finally:
        get_settings.cache_clear()


def test_production_scales_gpu_replicas_from_zero():
    raw = yaml.safe_load((Path(__file__).parents[2] / "deployments" / "production.yaml").read_text())
    [app] = raw["applications"]
    diffusion = next(d for d in app["deployments"] if d["name"] == "Diffusion")
    assert diffusion["autoscaling_config"]["min_replicas"] == 0
    assert diffusion["ray_actor_options"]["num_gpus"] == 1


def test_deploying_without_a_database_url_is_refused(monkeypatch):
    monkeypatch.delenv("SERVE_APP_DATABASE_URL", raising=False)
    from serve_app.settings import get_settings

    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="SERVE_APP_DATABASE_URL"):
            resolve_args({})
    finally:
        get_settings.cache_clear()


def test_settings_normalize_urls_and_default_paths(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, database_url="postgresql+asyncpg://u@h/db")
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.resolved_models_dir() == (tmp_path / "models").resolve()
    assert settings.resolved_storage_url() == (tmp_path / "files").resolve().as_uri()
    assert Settings(data_dir=tmp_path, database_url="").database_url is None


def test_the_ingress_shares_the_queues_database_models_and_waiting_limit(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, max_waiting_jobs=7, _env_file=None)
    args = AppArgs.from_settings(settings, database_url="postgresql://db/serve")
    ingress = ingress_args(args.model_copy(update={"ingress": args.ingress.model_copy(update={"database_url": ""})}))
    assert ingress.database_url == "postgresql://db/serve"
    assert ingress.max_waiting_jobs == 7  # GET /api/settings shows the limit the Queue enforces
    assert diffusion_args(args).database_url == "postgresql://db/serve"
