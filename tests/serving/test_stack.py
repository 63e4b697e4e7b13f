"""The real thing: `serve-app run` (Ray Serve, embedded-style Postgres, tiny models) over HTTP.

Tests in this module share one running stack and run in file order; the last one stops it.
"""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
import socketio
from PIL import Image

from tests.support.invokeai_graphs import enqueue_body, sd1_txt2img
from tests.support.tiny_models import peft_lora

pytestmark = [pytest.mark.serving, pytest.mark.timeout(600)]

SMALL = {"prompt": "a cat", "width": 64, "height": 64, "num_inference_steps": 2}


def invoke(stack, **params) -> str:
    response = httpx.post(f"{stack.url}/api/invoke", json=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["data"]["uuid"]


def status(stack, uid: str) -> dict:
    response = httpx.get(f"{stack.url}/api/invocation/{uid}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def poll(stack, uid: str, predicate, timeout: float = 120.0, tolerate_errors: bool = False) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = status(stack, uid)
        except (AssertionError, httpx.HTTPError):
            if not tolerate_errors:
                raise
        else:
            if predicate(data):
                return data
        time.sleep(0.05)  # client-side polling, as Enfugue clients do
    raise AssertionError(f"timed out waiting on {uid}: {status(stack, uid)}\n{stack.log()}")


def done(data: dict) -> bool:
    return data["status"] in ("completed", "error")


def png(stack, entry: str) -> Image.Image:
    response = httpx.get(f"{stack.url}/api/invocation/{entry}", timeout=30)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


async def job_row(stack, uid: str) -> tuple[asyncpg.Record, int]:
    connection = await asyncpg.connect(stack.database_url)
    try:
        job = await connection.fetchrow("SELECT * FROM jobs WHERE id = $1", uuid.UUID(uid))
        images = await connection.fetchval("SELECT count(*) FROM images WHERE job_id = $1", uuid.UUID(uid))
    finally:
        await connection.close()
    return job, images


def test_ready_and_discoverable(stack):
    body = httpx.get(f"{stack.url}/api").json()
    assert body["data"]["status"] in ("ready", "busy")
    assert httpx.get(f"{stack.url}/api/v1/app/version").json()["version"] == "6.8.1"
    assert httpx.get(f"{stack.url}/docs").status_code == 200


async def test_an_invokeai_script_runs_unchanged_through_ray_serve(stack):
    """Build the UI graph, enqueue, follow the Socket.IO events (through Serve's proxy), poll, download."""
    models = httpx.get(f"{stack.url}/api/v2/models/", params={"model_type": "main"}, timeout=30).json()["models"]
    model = next(m for m in models if m["name"] == "demo-sd15")
    graph, ids = sd1_txt2img(
        {key: model[key] for key in ("key", "hash", "name", "base", "type")}, width=64, height=64, steps=2
    )
    client = socketio.AsyncClient(reconnection=False)
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def on_any(event: str, data: Any = None) -> None:
        events.put_nowait((event, data))

    client.on("*", on_any)
    await client.connect(stack.url, socketio_path="/ws/socket.io", transports=["websocket"], wait_timeout=30)
    try:
        await client.call("subscribe_queue", {"queue_id": "default"}, timeout=30)
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            response = await http.post(
                "/api/v1/queue/default/enqueue_batch", json=enqueue_body(graph, seeds=[1, 2], prompts=["a cat"])
            )
            assert response.status_code == 200, response.text
            item_ids = sorted(response.json()["item_ids"])
            completed: set[int] = set()
            async with asyncio.timeout(120):
                while completed != set(item_ids):
                    event, data = await events.get()
                    if event == "queue_item_status_changed" and data["status"] == "completed":
                        completed.add(data["item_id"])
            for item_id in item_ids:
                item = (await http.get(f"/api/v1/queue/default/i/{item_id}")).json()
                [prepared] = item["session"]["source_prepared_mapping"][ids.output]
                name = item["session"]["results"][prepared]["image"]["image_name"]
                full = await http.get(f"/api/v1/images/i/{name}/full")
                assert full.status_code == 200
                assert Image.open(io.BytesIO(full.content)).size == (64, 64)
    finally:
        await client.disconnect()


async def _until(fetch: Callable[[], Awaitable[Any]], accept: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    """Poll `fetch` until `accept` holds (the state under test is written by another process)."""
    async with asyncio.timeout(timeout):
        while not accept(value := await fetch()):
            await asyncio.sleep(0.2)
    return value


async def test_a_model_installed_through_the_api_runs_on_the_replicas_which_report_their_cache(stack):
    """Install a peft LoRA from an import folder, generate with it (model-load events on Socket.IO), then read
    the replicas' cache stats and empty their caches, all through Serve."""
    lora_file = peft_lora(stack.data_dir / "imports", base="sd-1", seed=3, name="ray-lora")
    client = socketio.AsyncClient(reconnection=False)
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def on_any(event: str, data: Any = None) -> None:
        events.put_nowait((event, data))

    client.on("*", on_any)
    await client.connect(stack.url, socketio_path="/ws/socket.io", transports=["websocket"], wait_timeout=30)
    try:
        await client.call("subscribe_queue", {"queue_id": "default"}, timeout=30)
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            response = await http.post("/api/v2/models/install", params={"source": str(lora_file)}, json={})
            assert response.status_code == 201, response.text

            async def install_job() -> dict[str, Any]:
                return (await http.get(f"/api/v2/models/install/{response.json()['id']}")).json()

            job = await _until(install_job, lambda job: job["status"] in ("completed", "error"))
            assert job["status"] == "completed", job
            lora = job["config_out"]
            assert (lora["base"], lora["type"], lora["format"]) == ("sd-1", "lora", "lycoris")

            main = (await http.get("/api/v2/models/", params={"model_name": "demo-sd15"})).json()["models"][0]
            identifier = {key: main[key] for key in ("key", "hash", "name", "base", "type")}
            lora_id = {key: lora[key] for key in ("key", "hash", "name", "base", "type")}
            graph, _ = sd1_txt2img(identifier, width=64, height=64, steps=2, loras=[(lora_id, 1.0)])
            enqueued = await http.post(
                "/api/v1/queue/default/enqueue_batch", json=enqueue_body(graph, seeds=[5], prompts=["a cat"])
            )
            assert enqueued.status_code == 200, enqueued.text
            [item_id] = enqueued.json()["item_ids"]

            loaded: list[tuple[str, str | None]] = []
            async with asyncio.timeout(120):
                while True:
                    event, data = await events.get()
                    if event == "model_load_complete":
                        loaded.append((data["config"]["key"], data["submodel_type"]))
                    finished = data.get("status") in ("completed", "failed", "canceled") if data else False
                    if event == "queue_item_status_changed" and data["item_id"] == item_id and finished:
                        assert data["status"] == "completed", data
                        break
            assert (main["key"], "unet") in loaded
            assert any(key == lora["key"] for key, _ in loaded)

            async def stats() -> Any:
                return (await http.get("/api/v2/models/stats")).json()

            lora_entry = f"sd-1:lora:{lora['name']}:"
            held = await _until(stats, lambda s: s is not None and lora_entry in s["loaded_model_sizes"])
            assert held["in_cache"] > 0 and held["misses"] > 0

            assert (await http.post("/api/v2/models/empty_model_cache")).status_code == 200
            emptied = await _until(stats, lambda s: s is not None and s["in_cache"] == 0)
            assert emptied["loaded_model_sizes"] == {} and emptied["cleared"] >= held["in_cache"]
    finally:
        await client.disconnect()


def test_invoke_poll_png_of_requested_size_and_deterministic(stack):
    params = {**SMALL, "width": 64, "height": 96, "seed": 11, "samples": 2}
    first = invoke(stack, **params)
    second = invoke(stack, **params)
    results = [poll(stack, uid, done) for uid in (first, second)]
    assert [r["status"] for r in results] == ["completed", "completed"]
    images = [[png(stack, entry) for entry in r["images"]] for r in results]
    assert all(image.size == (64, 96) for pair in images for image in pair)
    assert images[0][0].tobytes() == images[1][0].tobytes()
    assert images[0][1].tobytes() == images[1][1].tobytes()
    assert images[0][0].tobytes() != images[0][1].tobytes()  # image i uses seed + i


def test_bad_input_crosses_the_handles_as_4xx(stack):
    response = httpx.post(f"{stack.url}/api/invoke", json={**SMALL, "width": 65})
    assert response.status_code == 400
    assert response.json()["errors"][0]["title"] == "BadRequestError"
    response = httpx.post(f"{stack.url}/api/invoke", json={**SMALL, "model": "missing"})
    assert response.status_code == 404
    assert response.json()["errors"][0]["detail"] == "Unknown diffusion model missing"
    assert httpx.get(f"{stack.url}/api/invocation/{uuid.uuid4().hex}").status_code == 404


def test_cancel_mid_run_frees_the_replica(stack):
    long = {**SMALL, "width": 128, "height": 128, "num_inference_steps": 200}
    uid = invoke(stack, **long)
    running = poll(stack, uid, lambda d: d["status"] == "processing" and (d["step"] or 0) >= 5)
    seconds_per_step = running["duration"] / running["step"]
    canceled_at = time.monotonic()
    response = httpx.post(f"{stack.url}/api/invocation/{uid}/cancel")
    assert response.json()["data"]["message"] == "The invocation was canceled."
    # The same job again: if the replica kept denoising the canceled one (~190 steps left), this
    # one would wait for it. Compare with the time those steps take, measured in this run.
    follow = invoke(stack, **{**long, "num_inference_steps": 20})
    assert poll(stack, follow, done)["status"] == "completed"
    elapsed = time.monotonic() - canceled_at
    remaining_if_not_stopped = (200 - running["step"]) * seconds_per_step
    assert elapsed < 0.6 * (remaining_if_not_stopped + 20 * seconds_per_step), (elapsed, remaining_if_not_stopped)
    assert status(stack, uid)["status"] == "error"


async def test_diffusion_replica_killed_mid_job_completes_exactly_once(stack):
    uid = invoke(stack, **{**SMALL, "width": 128, "height": 128, "num_inference_steps": 120, "samples": 2})
    poll(stack, uid, lambda d: d["status"] == "processing" and (d["step"] or 0) >= 3)
    [replica] = stack.replica_processes("Diffusion")
    replica.kill()
    replica.wait(timeout=30)
    data = poll(stack, uid, done, timeout=240, tolerate_errors=True)
    assert data["status"] == "completed", data
    assert len(data["images"]) == 2
    job, image_rows = await job_row(stack, uid)
    assert job["attempts"] == 2
    assert image_rows == 2


async def test_queue_replica_killed_jobs_resume(stack):
    uid = invoke(stack, **{**SMALL, "width": 128, "height": 128, "num_inference_steps": 120})
    poll(stack, uid, lambda d: d["status"] == "processing" and (d["step"] or 0) >= 3)
    [replica] = stack.replica_processes("Queue")
    replica.kill()
    replica.wait(timeout=30)
    # Serve restarts the Queue replica; its reaper finds the expired lease and runs the job again.
    data = poll(stack, uid, done, timeout=240, tolerate_errors=True)
    assert data["status"] == "completed", data
    job, image_rows = await job_row(stack, uid)
    assert job["attempts"] == 2
    assert image_rows == 1


def test_cli_generate_writes_the_png(stack, tmp_path):
    out = tmp_path / "cli.png"
    result = subprocess.run(
        [sys.executable, "-m", "serve_app.cli", "generate", "a boat", "--out", str(out), "--server", stack.url,
         "--width", "64", "--height", "64", "--steps", "2", "--seed", "3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (64, 64)


def test_sigterm_stops_everything_and_leaves_no_process(stack):
    processes = stack.processes()
    assert len(processes) > 3  # launcher, Ray's own processes, replicas
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(timeout=90) == 0, stack.log()
    gone, alive = psutil.wait_procs(processes, timeout=30)
    assert alive == [], [(p.pid, p.name()) for p in alive]
