"""Replica affinity on a real Ray Serve instance with two Diffusion replicas: jobs for a model go to the replica
that already ran it (Serve's multiplexed routing on the job's main model key), so each model is loaded once.

Without affinity, Serve's power-of-two-choices routing spreads sequential jobs over both replicas at random, and
both replicas would end up holding both models (all 8 jobs landing "right" by chance: under 1%).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from ray import serve

from serve_app.serving.app import diffusion_args, ingress_args
from serve_app.serving.args import AppArgs
from serve_app.serving.diffusion import Diffusion
from serve_app.serving.ingress import Ingress
from serve_app.serving.launcher import ensure_demo_models, local_ray
from serve_app.serving.queue import Queue
from serve_app.settings import Settings
from tests.conftest import with_database
from tests.serving.conftest import free_port

pytestmark = [pytest.mark.serving, pytest.mark.timeout(600)]

APP = "affinity"


@pytest.fixture(scope="module")
def affinity_database(postgres_server: str, postgres_template: str) -> Iterator[str]:
    name = f"affinity_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        connection = await asyncpg.connect(postgres_server)
        try:
            await connection.execute(f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
        finally:
            await connection.close()

    asyncio.run(create())
    yield with_database(postgres_server, name)


@pytest.fixture(scope="module")
def two_replicas(affinity_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app graph of `build_app` with two Diffusion replicas (half a CPU each); yields its URL."""
    port = free_port()
    settings = Settings(data_dir=tmp_path_factory.mktemp("affinity"), port=port, _env_file=None)
    ensure_demo_models(settings.resolved_models_dir())
    args = AppArgs.from_settings(settings, database_url=affinity_database)
    with local_ray():
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        diffusion = Diffusion.options(num_replicas=2, ray_actor_options={"num_cpus": 0.5}).bind(diffusion_args(args))
        queue = Queue.options(ray_actor_options={"num_cpus": 0.1}).bind(args.queue, diffusion)
        serve.run(Ingress.bind(ingress_args(args), queue), name=APP, route_prefix="/", blocking=False)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            serve.delete(APP)


def _generate(url: str, model: str) -> None:
    body = {"model": model, "prompt": "a cat", "width": 64, "height": 64, "num_inference_steps": 2}
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/api/invoke", json=body)
        assert response.status_code == 200, response.text
        uid = response.json()["data"]["uuid"]
        deadline = time.monotonic() + 120
        while (status := client.get(f"/api/invocation/{uid}").json()["data"])["status"] not in ("completed", "error"):
            assert time.monotonic() < deadline, status
            time.sleep(0.1)  # polling a job's status, as every Enfugue client does
        assert status["status"] == "completed", status


def _models_per_replica(database_url: str) -> dict[str, set[str]]:
    """For each Diffusion replica, the main models its cache holds (from the rows the replicas report)."""

    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(database_url)
        try:
            return await connection.fetch("SELECT replica_id, stats FROM model_cache_stats")
        finally:
            await connection.close()

    rows = asyncio.run(fetch())
    held: dict[str, set[str]] = {}
    for row in rows:
        stats: dict[str, Any] = json.loads(row["stats"]) if isinstance(row["stats"], str) else row["stats"]
        held[row["replica_id"]] = {
            name.split(":")[2] for name in stats["loaded_model_sizes"] if name.split(":")[1] == "main"
        }
    return held


def test_each_model_stays_on_the_replica_that_loaded_it(two_replicas: str, affinity_database: str) -> None:
    for model in ["demo-sd15", "demo-sdxl"] * 4:
        _generate(two_replicas, model)

    deadline = time.monotonic() + 30
    while True:  # each replica writes its row right after its cache changes: wait for both to show
        held = _models_per_replica(affinity_database)
        if set().union(*held.values()) == {"demo-sd15", "demo-sdxl"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(map(sorted, held.values())) == [["demo-sd15"], ["demo-sdxl"]], held
