"""Enfugue's `GET /api/invocation-history[/{id}]` through the ASGI app on a real Postgres: the caller's own Enfugue
jobs as DiffusionInvocation objects, with the generic REST query language, and never anyone else's."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.domain.images import StoredImage
from serve_app.domain.jobs import JobError, NewJob
from serve_app.services.history import HistoryService
from serve_app.services.jobs import JobService
from serve_app.serving.args import StorageArgs
from serve_app.serving.wiring import build_catalog, build_store
from serve_app.storage.history_repository import PgInvocationHistory
from tests.api.conftest import TEST_LIMITS
from tests.api.test_enfugue_validation import assert_enfugue_error

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

STARTED = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
Client = Callable[[str], httpx.AsyncClient]


@pytest_asyncio.fixture(loop_scope="session")
async def client_for(pool, repo, models_dir: Path, tmp_path: Path) -> AsyncIterator[Client]:
    """Clients of apps whose (auth-off) caller is the given owner; jobs are stored, never run."""
    store = build_store(StorageArgs(url=(tmp_path / "files").as_uri()))
    jobs = JobService(repo=repo, catalog=build_catalog(str(models_dir), "demo-sd15"), store=store, limits=TEST_LIMITS)
    history = HistoryService(PgInvocationHistory(pool))
    clients: list[httpx.AsyncClient] = []

    def make(owner: str) -> httpx.AsyncClient:
        context = ApiContext(jobs=jobs, store=store, version="test", default_owner=owner, history=history)
        transport = httpx.ASGITransport(app=create_app(context))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://serve-app.test"))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


async def enqueue(repo, owner: str, prompt: str, origin: str | None = "enfugue") -> uuid.UUID:
    plan = {"prompt": prompt, "model": "demo-sd15", "samples": 2}
    [job] = await repo.enqueue([NewJob(request={"enfugue": plan}, owner=owner, origin=origin)], max_waiting=100)
    return job.id


async def started_at(pool, job_id: uuid.UUID, seconds: int, duration: float | None) -> None:
    """Pin the job's timestamps, so `started` and `duration` are exact."""
    await pool.execute(
        "UPDATE jobs SET created_at = $2::timestamptz + make_interval(secs => $3), started_at = $2, "
        "completed_at = $2::timestamptz + make_interval(secs => $4::float8) "
        "WHERE id = $1",
        job_id,
        STARTED,
        seconds,
        duration,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def seeded(pool, repo) -> dict[str, uuid.UUID]:
    """admin: a completed job with 2 images, a failed one, a pending one (and an InvokeAI job); bob: one job."""
    ids = {
        "done": await enqueue(repo, "admin", "A happy-looking puppy"),
        "failed": await enqueue(repo, "admin", "a lighthouse"),
        "pending": await enqueue(repo, "admin", "a red barn"),
        "invokeai": await enqueue(repo, "admin", "not enfugue", origin=None),
        "bob": await enqueue(repo, "bob", "bob's secret puppy"),
    }
    claimed = {job.id: job.attempt for job in await repo.claim(limit=2, lease_seconds=60)}
    assert set(claimed) == {ids["done"], ids["failed"]}
    images = [
        StoredImage(name=f"{ids['done'].hex}_{i}.png", width=64, height=64, position=i, storage_key=f"k{i}",
                    thumbnail_key=f"t{i}")
        for i in range(2)
    ]  # fmt: skip
    assert await repo.complete(ids["done"], claimed[ids["done"]], images)
    assert await repo.fail(ids["failed"], claimed[ids["failed"]], JobError(type="ValueError", message="Unknown foo"))
    await started_at(pool, ids["done"], 0, 2.5)
    await started_at(pool, ids["failed"], 1, 0.25)
    await started_at(pool, ids["pending"], 2, None)
    return ids


def attributes(body: dict) -> list[dict]:
    assert all(item["type"] == "DiffusionInvocation" for item in body["data"])
    return [item["attributes"] for item in body["data"]]


async def test_the_caller_s_enfugue_jobs_as_diffusion_invocations(client_for, seeded):
    response = await client_for("admin").get("/api/invocation-history", params={"sort": "started"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    body = response.json()
    assert body["meta"] == {"params": {"sort": ["started"]}, "count": 3}
    done, failed, pending = attributes(body)
    assert done == {
        "id": seeded["done"].hex,
        "user_id": "admin",
        "started": "2024-05-01T12:00:00.123456",
        "plan": {"prompt": "A happy-looking puppy", "model": "demo-sd15", "samples": 2},
        "duration": 2.5,
        "outputs": 2,
        "error": None,
    }
    assert (failed["id"], failed["error"], failed["duration"], failed["outputs"]) == (
        seeded["failed"].hex, "Unknown foo", 0.25, 0
    )  # fmt: skip
    assert (pending["id"], pending["started"], pending["duration"], pending["error"]) == (
        seeded["pending"].hex, "2024-05-01T12:00:02.123456", 0, None
    )  # fmt: skip


async def test_wiki_limit_counts_everything(client_for, seeded):
    body = (await client_for("admin").get("/api/invocation-history?limit=1&sort=started:desc")).json()
    assert body["meta"] == {"params": {"limit": ["1"], "sort": ["started:desc"]}, "count": 3}
    assert [entry["id"] for entry in attributes(body)] == [seeded["pending"].hex]


async def test_the_query_language_applies(client_for, seeded):
    admin = client_for("admin")

    async def ids(**params) -> list[str]:
        return [entry["id"] for entry in attributes((await admin.get("/api/invocation-history", params=params)).json())]

    assert await ids(filter="outputs:2") == [seeded["done"].hex]
    assert await ids(filter="!error:null") == [seeded["failed"].hex]
    assert await ids(filter="error|id:Unknown foo|" + seeded["pending"].hex, sort="started") == [
        seeded["failed"].hex, seeded["pending"].hex
    ]  # fmt: skip
    assert await ids(ilike="plan:PUPPY") == [seeded["done"].hex]
    assert await ids(sort=["outputs:desc", "started:desc"], offset="1") == [seeded["pending"].hex, seeded["failed"].hex]


async def test_no_query_reaches_another_owner_s_history(client_for, seeded):
    admin = client_for("admin")
    for params in ({"filter": "user_id:bob"}, {"filter": "!user_id:admin"}, {"ilike": "plan:secret"}):
        body = (await admin.get("/api/invocation-history", params=params)).json()
        assert (body["data"], body["meta"]["count"]) == ([], 0)
    body = (await client_for("bob").get("/api/invocation-history")).json()
    assert [(entry["id"], entry["user_id"]) for entry in attributes(body)] == [(seeded["bob"].hex, "bob")]


async def test_a_scoped_get_is_a_one_element_list(client_for, seeded):
    body = (await client_for("admin").get(f"/api/invocation-history/{seeded['done'].hex}")).json()
    assert body["meta"]["count"] == 1
    assert [entry["outputs"] for entry in attributes(body)] == [2]


@pytest.mark.parametrize("which", ["bob", "invokeai", "missing", "x' OR '1'='1", "%"])
async def test_a_scoped_get_of_anything_else_is_404(client_for, seeded, which):
    invocation_id = seeded[which].hex if which in seeded else uuid.uuid4().hex if which == "missing" else which
    response = await client_for("admin").get(f"/api/invocation-history/{invocation_id}")
    assert_enfugue_error(response, 404, "NotFoundError", f"No DiffusionInvocation found with id={invocation_id}")


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"sort": "owner"}, "Unknown column owner"),
        ({"filter": "request:1"}, "Unknown column request"),
        ({"ilike": "error_message:x"}, "Unknown column error_message"),
        ({"filter": "outputs:many"}, "Bad value 'many' for column outputs"),
        ({"filter": "started:yesterday"}, "Bad value 'yesterday' for column started"),
        ({"sort": "plan"}, "Column plan cannot be sorted"),
        ({"sort": "started:sideways"}, "asc or desc"),
        ({"limit": "all"}, "`limit` must be an integer"),
        ({"include": "user"}, "Unknown or bad relationship user"),
    ],
)
async def test_bad_queries_are_400(client_for, seeded, params, detail):
    assert_enfugue_error(await client_for("admin").get("/api/invocation-history", params=params), 400,
                         "BadRequestError", detail)  # fmt: skip


async def test_an_invocation_appears_in_the_history_with_its_plan(client_for):
    admin = client_for("admin")
    response = await admin.post("/api/invoke", json={"prompt": "a lighthouse", "width": 64, "height": 64, "seed": 7})
    assert response.status_code == 200, response.text
    job_id = response.json()["data"]["uuid"]
    [entry] = attributes((await admin.get("/api/invocation-history")).json())
    assert entry["id"] == job_id
    assert re.fullmatch(r"[0-9a-f]{32}", entry["id"])
    assert (entry["plan"]["prompt"], entry["plan"]["seed"], entry["outputs"], entry["duration"]) == (
        "a lighthouse", 7, 0, 0
    )  # fmt: skip
