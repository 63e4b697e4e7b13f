"""Serving overhead: N sequential jobs end to end over HTTP vs the same pipeline called in-process.

Starts the real local stack (`serve-app run`'s code path: embedded Postgres, Ray Serve, the tiny
demo model), runs N jobs one after another through `POST /api/invoke` → poll → fetch PNG, then
calls the same GenerationRunner directly in this process for the same requests. Prints JSON and
writes it to loadtests/results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep the local Ray on loopback

RESULTS = Path(__file__).parent / "results" / "overhead.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end_to_end(base_url: str, body: dict[str, Any], poll_interval: float) -> float:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        start = time.perf_counter()
        uid = client.post("/api/invoke", json=body).json()["data"]["uuid"]
        while True:
            data = client.get(f"/api/invocation/{uid}").json()["data"]
            if data["status"] in ("completed", "error"):
                break
            time.sleep(poll_interval)  # the client's polling cadence is part of what users see
        if data["status"] != "completed":
            raise RuntimeError(f"job failed: {data}")
        client.get(f"/api/invocation/{data['images'][0]}").raise_for_status()
        return (time.perf_counter() - start) * 1000


def pipeline_only(models_dir: Path, body: dict[str, Any], runs: int) -> list[float]:
    import torch

    from serve_app.domain.generation import GenerationRequest
    from serve_app.inference.loading import pick_device
    from serve_app.inference.model_cache import ModelCache
    from serve_app.inference.runner import GenerationRunner
    from serve_app.storage.model_catalog import DirectoryModelCatalog

    torch.set_num_threads(1)
    device, dtype = pick_device()
    runner = GenerationRunner(ModelCache(), device=device, dtype=dtype)
    spec = DirectoryModelCatalog(models_dir, "demo-sd15").resolve(None)
    request = GenerationRequest(
        model=spec.name,
        prompt=body["prompt"],
        width=body["width"],
        height=body["height"],
        steps=body["num_inference_steps"],
        seed=body["seed"],
    )
    runner.run(spec, request)  # warm-up: load and first-call costs are not per-job overhead
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.run(spec, request)
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--poll-interval", type=float, default=0.01)
    options = parser.parse_args()

    from serve_app.serving.launcher import local_stack
    from serve_app.settings import Settings

    body = {"prompt": "a lighthouse at dusk", "width": options.size, "height": options.size,
            "num_inference_steps": options.steps, "seed": 42}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sa-bench-") as data_dir:
        settings = Settings(data_dir=Path(data_dir), port=free_port())
        with local_stack(settings) as stack:
            end_to_end(stack.url, body, options.poll_interval)  # warm-up: model load on the replica
            e2e = [end_to_end(stack.url, body, options.poll_interval) for _ in range(options.jobs)]
        direct = pipeline_only(settings.resolved_models_dir(), body, options.jobs)

    e2e_p50, direct_p50 = statistics.median(e2e), statistics.median(direct)
    result = {
        "benchmark": "overhead",
        "jobs": options.jobs,
        "size": options.size,
        "steps": options.steps,
        "poll_interval_ms": options.poll_interval * 1000,
        "end_to_end_p50_ms": round(e2e_p50, 1),
        "end_to_end_p95_ms": round(percentile(e2e, 95), 1),
        "pipeline_only_p50_ms": round(direct_p50, 1),
        "overhead_p50_ms": round(e2e_p50 - direct_p50, 1),
        "ratio_end_to_end_over_pipeline": round(e2e_p50 / direct_p50, 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
