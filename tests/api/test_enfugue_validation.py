"""Enfugue dialect: bad input gets a 4xx in Enfugue's error envelope and nothing is stored."""

from __future__ import annotations

import json
import uuid

import pytest

from serve_app.domain.jobs import JobStatus

pytestmark = pytest.mark.asyncio(loop_scope="session")

SMALL = {"prompt": "a cat", "width": 64, "height": 64, "num_inference_steps": 2}


def assert_enfugue_error(response, status: int, title: str, detail_part: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    [error] = response.json()["errors"]
    assert error["status"] == str(status)
    assert error["title"] == title
    assert detail_part in error["detail"]


async def assert_nothing_stored(repo) -> None:
    counts = await repo.count_by_status()
    assert sum(counts.values()) == 0, counts


@pytest.mark.parametrize(
    ("override", "detail"),
    [
        ({"width": 65}, "multiple of 8"),
        ({"height": 0}, "multiple of 8"),
        ({"width": 1024}, "at most 512"),
        ({"num_inference_steps": 0}, "steps"),
        ({"num_inference_steps": 51}, "steps"),
        ({"samples": 0}, "samples"),
        ({"samples": 3, "iterations": 2}, "number of images"),
        ({"scheduler": "warp-drive"}, "Unknown scheduler warp-drive"),
        ({"width": "wide"}, "width"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"seed": -5}, "seed"),
        ({"model_type": "lora"}, "model_type"),
    ],
)
async def test_invalid_parameters_are_400_and_not_stored(idle_client, repo, override, detail):
    response = await idle_client.post("/api/invoke", json={**SMALL, **override})
    assert_enfugue_error(response, 400, "BadRequestError", detail)
    await assert_nothing_stored(repo)


async def test_unknown_model_is_404_and_unknown_checkpoint_400(idle_client, repo):
    response = await idle_client.post("/api/invoke", json={**SMALL, "model": "no-such-model"})
    assert_enfugue_error(response, 404, "NotFoundError", "Unknown diffusion model no-such-model")
    response = await idle_client.post("/api/invoke", json={**SMALL, "model": "nope.safetensors"})
    assert_enfugue_error(response, 400, "BadRequestError", "Cannot find or access nope.safetensors")
    await assert_nothing_stored(repo)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"a string"', b"\xff\xfe"])
async def test_malformed_json_is_400(idle_client, repo, body):
    response = await idle_client.post("/api/invoke", content=body, headers={"content-type": "application/json"})
    assert_enfugue_error(response, 400, "BadRequestError")
    await assert_nothing_stored(repo)


async def test_oversized_body_is_413(idle_client, repo):
    body = json.dumps({**SMALL, "prompt": "x" * 70_000})
    response = await idle_client.post("/api/invoke", content=body, headers={"content-type": "application/json"})
    assert_enfugue_error(response, 413, "BadRequestError", "larger than")
    await assert_nothing_stored(repo)


async def test_features_not_built_yet_are_501_not_silently_ignored(idle_client, repo):
    response = await idle_client.post("/api/invoke", json={**SMALL, "fill_background": True})
    assert_enfugue_error(response, 501, "NotImplementedError", "fill_background")
    await assert_nothing_stored(repo)


async def test_unknown_keys_are_ignored_like_enfugue(idle_client, repo):
    response = await idle_client.post("/api/invoke", json={**SMALL, "chunking_size": 64, "no_such_key": 1})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "queued"


async def test_waiting_queue_full_is_429(idle_client, repo):
    for _ in range(3):  # TEST_LIMITS.max_waiting_jobs
        assert (await idle_client.post("/api/invoke", json=SMALL)).status_code == 200
    response = await idle_client.post("/api/invoke", json=SMALL)
    assert_enfugue_error(response, 429, "TooManyRequestsError", "queue is full")
    assert "retry-after" in response.headers
    assert (await repo.count_by_status())[JobStatus.PENDING] == 3


async def test_unknown_or_malformed_invocation_is_404(idle_client):
    for path in (f"/api/invocation/{uuid.uuid4().hex}", "/api/invocation/not-a-uuid"):
        assert_enfugue_error(await idle_client.get(path), 404, "NotFoundError")
        assert_enfugue_error(await idle_client.delete(path), 404, "NotFoundError")
        assert_enfugue_error(await idle_client.post(f"{path}/cancel"), 404, "NotFoundError")


@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd", "x.png", f"{uuid.uuid4().hex}_0.png"])
async def test_image_routes_refuse_foreign_or_missing_names(idle_client, name):
    assert_enfugue_error(await idle_client.get(f"/api/invocation/images/{name}"), 404, "NotFoundError")
    assert_enfugue_error(await idle_client.get(f"/api/invocation/thumbnails/{name}"), 404, "NotFoundError")
    assert_enfugue_error(await idle_client.get(f"/api/invocation/intermediates/{name}"), 404, "NotFoundError")


async def test_cancel_pending_is_immediate_and_final(idle_client, repo):
    uid = (await idle_client.post("/api/invoke", json=SMALL)).json()["data"]["uuid"]
    response = await idle_client.post(f"/api/invocation/{uid}/cancel")
    assert response.status_code == 200
    assert response.json()["data"] == {"status": "error", "uuid": uid, "message": "The invocation was canceled."}
    job = await repo.get(uuid.UUID(uid))
    assert job.status is JobStatus.CANCELED
    # A second cancel changes nothing.
    again = await idle_client.post(f"/api/invocation/{uid}/cancel")
    assert again.json()["data"]["status"] == "error"
    assert (await repo.get(uuid.UUID(uid))).completed_at == job.completed_at


async def test_unknown_route_and_method_in_enfugue_format(idle_client):
    assert_enfugue_error(await idle_client.get("/api/no-such-route"), 404, "NotFoundError")
    assert_enfugue_error(await idle_client.put("/api/invoke", json={}), 405, "UnsupportedMethodError")


async def test_invokeai_paths_keep_fastapi_error_shape(idle_client):
    response = await idle_client.get("/api/v1/no-such-route")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
