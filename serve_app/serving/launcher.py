"""The local stack: embedded Postgres, migrations, demo models, Ray on this machine, the app.

`serve-app run` and the serving tests both use `local_stack`, so what the tests start is what
users start. Everything started here is stopped here, by handle: never `ray stop`, never by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve

from serve_app.serving.app import build_app
from serve_app.serving.args import AppArgs
from serve_app.settings import Settings
from serve_app.storage.db import upgrade
from serve_app.storage.embedded import EmbeddedPostgres

log = logging.getLogger(__name__)


APP_NAME = "serve-app"


@dataclass(frozen=True)
class LocalStack:
    """A running stack: where to reach it and what it was started with."""

    url: str
    database_url: str
    args: AppArgs


@contextlib.contextmanager
def embedded_or_external_database(settings: Settings) -> Iterator[str]:
    """The configured Postgres, or an embedded one under the data dir for the lifetime of the block."""
    if settings.database_url:
        yield settings.database_url
        return
    server = EmbeddedPostgres(settings.data_dir.resolve() / "postgres")
    try:
        yield server.start()
    finally:
        server.stop()


def ensure_demo_models(models_dir: Path) -> None:
    """Build the tiny demo models once, in a child process so this process never imports torch."""
    models_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "serve_app.inference.demo", str(models_dir)], check=True, env=env)


@contextlib.contextmanager
def local_ray(*, num_cpus: int | None = None) -> Iterator[None]:
    """Ray on this machine only: loopback, a private short temp dir, one torch thread per worker."""
    temp_dir = tempfile.mkdtemp(prefix="sa-ray-", dir="/tmp")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    ray.init(
        num_cpus=num_cpus or max(2, os.cpu_count() or 2),
        include_dashboard=False,
        _temp_dir=temp_dir,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}},
        log_to_driver=os.environ.get("SERVE_APP_RAY_LOG_TO_DRIVER", "1") == "1",
    )
    # Ray installs a native SIGTERM handler that aborts the process; put the caller's back so
    # SIGTERM unwinds this context manager and shuts everything down in order.
    signal.signal(signal.SIGTERM, sigterm_handler)
    try:
        yield
    finally:
        # Ray stops the Serve controller and proxies with the cluster; `serve.shutdown()` here
        # would wait 30 s for a controller that has already exited (Ray 2.60).
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def local_stack(settings: Settings, *, args: AppArgs | None = None, build_demo: bool = True) -> Iterator[LocalStack]:
    """Start everything, yield once `GET /api` answers, stop everything on exit."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with embedded_or_external_database(settings) as database_url:
        upgrade(database_url)
        if build_demo:
            ensure_demo_models(settings.resolved_models_dir())
        app_args = args or AppArgs.from_settings(settings, database_url=database_url)
        with local_ray():
            serve.start(http_options={"host": settings.host, "port": settings.port})
            # serve.run returns once every deployment is healthy, i.e. once the API can answer.
            serve.run(build_app(app_args), name=APP_NAME, route_prefix="/", blocking=False)
            try:
                yield LocalStack(
                    url=f"http://{settings.host}:{settings.port}", database_url=database_url, args=app_args
                )
            finally:
                # Graceful: replicas drain, the Queue gives running jobs back and closes its
                # connections, all before Ray and the database go away.
                serve.delete(APP_NAME)
