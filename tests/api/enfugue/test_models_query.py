"""`GET /api/models[/{name}]` with Enfugue's generic REST query language (filter, ilike, sort, limit, include)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from serve_app.services.jobs import JobService
from serve_app.serving.args import StorageArgs
from serve_app.serving.wiring import build_catalog, build_store
from tests.api.conftest import TEST_LIMITS
from tests.api.enfugue.preset_support import preset_client
from tests.api.test_enfugue_validation import assert_enfugue_error

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

PRESETS = [
    {"name": "Alpha", "checkpoint": "a.safetensors", "size": 512, "prompt": "a dog", "vae": "mse"},
    {"name": "Beta", "checkpoint": "b.safetensors", "size": 1024, "prompt": "a cat"},
    {"name": "Gamma", "checkpoint": "a.safetensors", "size": 768, "negative_prompt": "blurry DOG"},
]


@pytest_asyncio.fixture(loop_scope="session")
async def api(pool, repo, models_dir: Path, tmp_path: Path) -> AsyncIterator:
    store = build_store(StorageArgs(url=(tmp_path / "files").as_uri()))
    jobs = JobService(repo=repo, catalog=build_catalog(str(models_dir), "demo-sd15"), store=store, limits=TEST_LIMITS)
    async with preset_client(pool, jobs, store) as client:
        for body in PRESETS:
            assert (await client.post("/api/models", json=body)).status_code == 200
        yield client


async def listing(api, path: str = "/api/models", **params) -> tuple[list[str], int]:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return [item["attributes"]["name"] for item in body["data"]], body["meta"]["count"]


async def test_filter_sort_and_page(api):
    assert await listing(api, filter="model:a.safetensors", sort="size:desc") == (["Gamma", "Alpha"], 2)
    assert await listing(api, filter="!size:512|768") == (["Beta"], 1)
    assert await listing(api, sort="size", limit="1", offset="1") == (["Gamma"], 3)
    assert await listing(api, filter="name+model:Beta|b.safetensors") == (["Beta"], 1)


async def test_ilikes_are_or_ed(api):
    assert await listing(api, ilike=["prompt:DOG", "negative_prompt:dog"]) == (["Alpha", "Gamma"], 2)


async def test_a_scoped_get_applies_the_query_too(api):
    response = await api.get("/api/models/Alpha", params={"include": "vae"})
    [item] = response.json()["data"]
    assert item["include"]["vae"][0]["attributes"]["name"] == "mse"
    assert await listing(api, "/api/models/Alpha", filter="size:512") == (["Alpha"], 1)
    assert_enfugue_error(
        await api.get("/api/models/Alpha", params={"filter": "size:1024"}), 404, "NotFoundError", "name=Alpha"
    )


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"sort": "checkpoint"}, "Unknown column checkpoint"),
        ({"filter": "vae:mse"}, "Unknown column vae"),
        ({"filter": "size:big"}, "Bad value 'big' for column size"),
        ({"ilike": "name"}, "column:value"),
        ({"include": "nope"}, "Unknown or bad relationship nope"),
    ],
)
async def test_bad_queries_are_400(api, params, detail):
    assert_enfugue_error(await api.get("/api/models", params=params), 400, "BadRequestError", detail)
