"""Enfugue dialect end to end in one process: invoke → poll → PNG, determinism, cancel, delete."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest
from PIL import Image

from serve_app.domain.jobs import JobStatus

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def wait_for(client, uid: str, predicate, timeout: float = 60.0) -> dict:
    """Poll the status endpoint (as Enfugue clients do) until predicate(status) holds."""
    async with asyncio.timeout(timeout):
        while True:
            data = (await client.get(f"/api/invocation/{uid}")).json()["data"]
            if predicate(data):
                return data
            await asyncio.sleep(0.05)


def finished(data: dict) -> bool:
    return data["status"] in ("completed", "error")


async def invoke(client, **params) -> str:
    response = await client.post("/api/invoke", json=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["meta"] == {"params": {}}
    assert body["data"]["status"] == "queued"
    assert len(body["data"]["uuid"]) == 32
    return body["data"]["uuid"]


async def fetch_png(client, entry: str) -> Image.Image:
    response = await client.get(f"/api/invocation/{entry}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


async def test_status_and_version(client):
    body = (await client.get("/api")).json()
    assert body["data"]["status"] in ("ready", "busy")
    assert set(body["data"]) == {"status", "system", "gpu", "version", "uptime"}
    assert (await client.get("/api/v1/app/version")).json() == {"version": "6.8.1", "highlights": None}
    assert (await client.get("/docs")).status_code == 200
    assert "/api/invoke" in (await client.get("/openapi.json")).json()["paths"]


async def test_invoke_poll_fetch_png(client):
    uid = await invoke(client, prompt="a red fox", width=64, height=96, num_inference_steps=3, seed=7, samples=2)
    data = await wait_for(client, uid, finished)
    assert data["status"] == "completed", data
    assert data["images"] == [f"images/{uid}_0.png", f"images/{uid}_1.png"]
    assert data["step"] == data["total"] == 3
    assert data["progress"] == 1.0
    assert data["duration"] > 0 and data["rate"] > 0
    assert isinstance(data["id"], int)
    for entry in data["images"]:
        image = await fetch_png(client, entry)
        assert image.size == (64, 96)
        assert '"seed"' in image.info["serve_app_metadata"]
    thumb = await client.get(f"/api/invocation/thumbnails/{uid}_0.png")
    assert thumb.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(thumb.content)).format == "WEBP"
    listed = (await client.get("/api/invocation")).json()["data"]
    assert uid in [item["uuid"] for item in listed]


async def test_same_seed_same_pixels(client):
    params = {"prompt": "a lighthouse", "width": 64, "height": 64, "num_inference_steps": 2, "seed": 1234}
    first, second = await invoke(client, **params), await invoke(client, **params)
    other = await invoke(client, **{**params, "seed": 4321})
    images = []
    for uid in (first, second, other):
        data = await wait_for(client, uid, finished)
        assert data["status"] == "completed", data
        images.append((await fetch_png(client, data["images"][0])).tobytes())
    assert images[0] == images[1]
    assert images[0] != images[2]


async def test_sdxl_demo_model(client):
    uid = await invoke(client, model="demo-sdxl", prompt="a castle", width=64, height=64, num_inference_steps=2)
    data = await wait_for(client, uid, finished)
    assert data["status"] == "completed", data
    assert (await fetch_png(client, data["images"][0])).size == (64, 64)


async def test_cancel_running_job_stops_it(client, runtime):
    uid = await invoke(client, prompt="slow", width=256, height=256, num_inference_steps=50)
    running = await wait_for(client, uid, lambda d: d["status"] == "processing" and (d["step"] or 0) >= 1)
    assert running["total"] == 50
    response = await client.post(f"/api/invocation/{uid}/cancel")
    assert response.json()["data"]["message"] == "The invocation was canceled."
    # The dispatcher drops the job promptly: it hears the NOTIFY and closes the executor stream.
    async with asyncio.timeout(10):
        while uuid.UUID(uid) in runtime.dispatcher.in_flight:
            await asyncio.sleep(0.02)
    job = await runtime.repo.get(uuid.UUID(uid))
    assert job.status is JobStatus.CANCELED
    assert job.image_names == []
    assert (job.progress_step or 0) < 50
    # And the replica is free again: the next job completes.
    follow = await invoke(client, prompt="next", width=64, height=64, num_inference_steps=2)
    assert (await wait_for(client, follow, finished))["status"] == "completed"


async def test_delete_removes_job_and_files(client):
    uid = await invoke(client, prompt="temporary", width=64, height=64, num_inference_steps=2)
    data = await wait_for(client, uid, finished)
    entry = data["images"][0]
    assert (await client.get(f"/api/invocation/{entry}")).status_code == 200
    response = await client.delete(f"/api/invocation/{uid}")
    assert response.status_code == 200
    assert response.json() == {"meta": {"params": {}}, "data": None}
    assert (await client.get(f"/api/invocation/{uid}")).status_code == 404
    assert (await client.get(f"/api/invocation/{entry}")).status_code == 404
    assert (await client.get(f"/api/invocation/thumbnails/{uid}_0.png")).status_code == 404
