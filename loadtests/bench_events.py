"""Event latency: a denoising step on the executor → the matching `invocation_progress` at a Socket.IO client.

Runs the production pieces in this process, minus Ray: embedded Postgres, the dispatcher and the
in-process executor on the tiny demo model, the Ingress app under uvicorn with its Socket.IO hub and
LISTEN connection, and a python-socketio client over WebSocket. The executor is wrapped to stamp
each progress event as it leaves the executor; the client stamps its arrival. The path measured is
the one every event takes: dispatcher → NOTIFY → LISTEN on the Ingress → hub → WebSocket → client.
(The Diffusion→Queue Ray stream adds one handle hop; `bench_overhead.py` measures Ray's share.)

Prints JSON and writes loadtests/results/events.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results" / "events.json"
# The UI-shaped graph builders are shared with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class StampingExecutor:
    """The JobExecutor port around the real one: records when each progress event leaves the executor."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: dict[tuple[int, int], float] = {}

    async def execute(self, job: Any) -> AsyncGenerator[Any, None]:
        async for event in self.inner.execute(job):
            if getattr(event, "kind", None) == "progress" and event.step is not None:
                self.sent[(job.item_id, event.step)] = time.perf_counter()
            yield event


async def measure(options: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    import socketio
    import torch
    import uvicorn

    from serve_app.api.app import create_app
    from serve_app.inference.executor import InProcessExecutor
    from serve_app.inference.loading import pick_device
    from serve_app.inference.model_cache import ModelCache
    from serve_app.inference.runner import GenerationRunner
    from serve_app.inference.tiny import ensure_demo_models
    from serve_app.serving.args import IngressArgs, QueueArgs, StorageArgs
    from serve_app.serving.wiring import build_catalog, build_store, ingress_runtime, queue_runtime
    from serve_app.storage.db import upgrade
    from serve_app.storage.embedded import EmbeddedPostgres
    from tests.support.invokeai_graphs import enqueue_body, sd1_txt2img

    torch.set_num_threads(1)
    postgres = EmbeddedPostgres(data_dir / "pg")
    url = postgres.start()
    try:
        await asyncio.to_thread(upgrade, url)
        models_dir = data_dir / "models"
        ensure_demo_models(models_dir)
        storage = StorageArgs(url=(data_dir / "files").as_uri())
        device, dtype = pick_device()
        executor = StampingExecutor(
            InProcessExecutor(
                runner=GenerationRunner(ModelCache(), device=device, dtype=dtype),
                catalog=build_catalog(str(models_dir), "demo-sd15"),
                store=build_store(storage),
                progress_interval=0.0,  # every step, so every step is measured
            )
        )
        queue_args = QueueArgs(database_url=url, models_dir=str(models_dir), default_model="demo-sd15",
                               storage=storage, poll_interval=0.2, migrate=False)  # fmt: skip
        ingress_args = IngressArgs(storage=storage, database_url=url, models_dir=str(models_dir),
                                   default_model="demo-sd15")  # fmt: skip
        async with (
            queue_runtime(queue_args, executor) as runtime,
            ingress_runtime(ingress_args, runtime.service) as ctx,
        ):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            server = uvicorn.Server(uvicorn.Config(create_app(ctx), lifespan="on", log_level="warning",
                                                   ws="websockets-sansio", timeout_graceful_shutdown=2))  # fmt: skip
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            received: dict[tuple[int, int], float] = {}
            finished: asyncio.Queue[int] = asyncio.Queue()
            client = socketio.AsyncClient(reconnection=False)

            async def on_progress(data: dict[str, Any]) -> None:
                if data["percentage"] is not None:
                    step = round(data["percentage"] * options.steps)
                    received.setdefault((data["item_id"], step), time.perf_counter())

            async def on_status(data: dict[str, Any]) -> None:
                if data["status"] in ("completed", "failed", "canceled"):
                    finished.put_nowait(data["item_id"])

            client.on("invocation_progress", on_progress)
            client.on("queue_item_status_changed", on_status)
            await client.connect(base, socketio_path="/ws/socket.io", transports=["websocket"])
            await client.call("subscribe_queue", {"queue_id": "default"})
            import httpx

            async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                model = next(
                    m for m in (await http.get("/api/v2/models/")).json()["models"] if m["name"] == "demo-sd15"
                )
                graph, _ = sd1_txt2img({k: model[k] for k in ("key", "hash", "name", "base", "type")},
                                       width=options.size, height=options.size, steps=options.steps)  # fmt: skip
                for index in range(options.items + 1):  # the first item warms the model up, unmeasured
                    body = enqueue_body(graph, seeds=[index], prompts=["a lighthouse"])
                    [item_id] = (await http.post("/api/v1/queue/default/enqueue_batch", json=body)).json()["item_ids"]
                    assert await asyncio.wait_for(finished.get(), 120) == item_id
                    if index == 0:
                        warmup = item_id
            await client.disconnect()
            server.should_exit = True
            await serving
    finally:
        postgres.stop()

    latencies = [
        (received[key] - sent) * 1000 for key, sent in executor.sent.items() if key in received and key[0] != warmup
    ]
    return {
        "benchmark": "step_to_socketio_event",
        "items": options.items,
        "steps": options.steps,
        "size": options.size,
        "events_measured": len(latencies),
        "events_missed": sum(1 for key in executor.sent if key not in received and key[0] != warmup),
        "latency_p50_ms": round(statistics.median(latencies), 2),
        "latency_p95_ms": round(percentile(latencies, 95), 2),
        "latency_max_ms": round(max(latencies), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sa-bench-events-") as data_dir:
        result = asyncio.run(measure(options, Path(data_dir)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
