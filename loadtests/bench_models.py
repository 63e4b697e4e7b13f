"""Model management figures: what probing, hashing and the model cache cost, against baselines measured here.

- probe vs hash: probing a single-file checkpoint reads its header only, so it should cost the same for a 4 MiB
  and a 256 MiB file while hashing grows with the size (baseline: reading the file once).
- blake3 vs sha256 throughput on the same file (InvokeAI's hash vs the download checksum).
- cache: a main model's parts loaded cold (miss) vs served warm (hit), and a whole tiny SD1 graph job on a
  cold vs a warm replica cache (what replica affinity saves per job).
Prints JSON and writes it to loadtests/results/models.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The graph builders of the tests (tests/support) build the UI-shaped graph the job runs.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).parent / "results" / "models.json"
SIZES_MIB = (4, 256)


def _timed(function: Any, repeat: int = 3) -> float:
    """Median milliseconds of `function()` over `repeat` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _checkpoint(path: Path, mib: int) -> Path:
    """An SD1-layout safetensors file of about `mib` MiB (random bytes, so nothing compresses or dedups)."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    weights = rng.standard_normal(mib * 2**18, dtype=np.float32)  # 4 bytes each
    tensors = {
        "model.diffusion_model.input_blocks.0.0.weight": np.zeros((320, 4, 3, 3), dtype=np.float32),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": np.zeros((8, 768), np.float32),
        "model.diffusion_model.out.2.weight": weights,
    }
    save_file(tensors, str(path))
    return path


def probe_and_hash(folder: Path) -> dict[str, Any]:
    from serve_app.storage.model_hash import hash_model
    from serve_app.storage.model_probe import probe

    figures: dict[str, Any] = {}
    for mib in SIZES_MIB:
        path = _checkpoint(folder / f"ckpt-{mib}.safetensors", mib)
        read_ms = _timed(lambda path=path: path.read_bytes())
        figures[f"{mib}MiB"] = {
            "read_once_ms": round(read_ms, 2),
            "probe_ms": round(_timed(lambda path=path: probe(path)), 3),
            "blake3_ms": round(_timed(lambda path=path: hash_model(path, "blake3")), 2),
            "sha256_ms": round(_timed(lambda path=path: hash_model(path, "sha256")), 2),
        }
    small, large = (figures[f"{mib}MiB"] for mib in SIZES_MIB)
    size_ratio = SIZES_MIB[1] / SIZES_MIB[0]
    return {
        **figures,
        "size_ratio": size_ratio,
        "probe_large_over_small": round(large["probe_ms"] / small["probe_ms"], 2),
        "blake3_large_over_small": round(large["blake3_ms"] / small["blake3_ms"], 2),
        "blake3_MiB_per_s": round(SIZES_MIB[1] / (large["blake3_ms"] / 1000), 1),
        "sha256_MiB_per_s": round(SIZES_MIB[1] / (large["sha256_ms"] / 1000), 1),
        "hash_over_read": round(large["blake3_ms"] / large["read_once_ms"], 2),
    }


def cache(folder: Path) -> dict[str, Any]:
    import torch

    from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
    from serve_app.inference.model_cache import ModelCache
    from serve_app.inference.tiny import build_tiny_sd15, save_diffusers

    torch.set_num_threads(1)
    path = save_diffusers(build_tiny_sd15(), folder / "tiny-sd15")
    spec = ModelSpec(name="tiny-sd15", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path=str(path))
    parts = ("text_encoder", "tokenizer", "unet", "scheduler", "vae")

    def load_all(model_cache: ModelCache) -> None:
        for part in parts:
            model_cache.get(spec, part)

    cold = []
    for _ in range(3):
        model_cache = ModelCache()
        start = time.perf_counter()
        load_all(model_cache)
        cold.append((time.perf_counter() - start) * 1000)
    warm_cache = ModelCache()
    load_all(warm_cache)
    warm = _timed(lambda: load_all(warm_cache), repeat=20)
    stats = warm_cache.stats()
    return {
        "parts_cold_ms": round(statistics.median(cold), 2),
        "parts_warm_ms": round(warm, 4),
        "cold_over_warm": round(statistics.median(cold) / warm, 1),
        "bytes_held": sum(stats["loaded_model_sizes"].values()),
        **asyncio.run(_jobs(spec)),
    }


async def _jobs(spec: Any) -> dict[str, Any]:
    """One tiny SD1 graph job (64x64, 4 steps) on a replica whose cache is cold vs one that ran it before."""
    import torch

    from serve_app.domain.graph.batch import Batch, expand_batch
    from serve_app.domain.jobs import ClaimedJob
    from serve_app.inference.executor import InProcessExecutor
    from serve_app.inference.model_cache import ModelCache
    from serve_app.inference.runner import GenerationRunner
    from serve_app.storage.model_catalog import DirectoryModelCatalog
    from serve_app.storage.objects import make_object_store
    from tests.support.invokeai_graphs import enqueue_body, sd1_txt2img

    identifier = {"key": spec.key, "hash": "", "name": spec.name, "base": spec.family, "type": spec.type}
    graph, _ = sd1_txt2img(identifier, width=64, height=64, steps=4)
    prepared, _ = next(expand_batch(Batch.model_validate(enqueue_body(graph, seeds=[1], prompts=["a cat"])["batch"])))
    session = prepared.model_dump(mode="json")
    with tempfile.TemporaryDirectory() as files:
        store = make_object_store(Path(files).as_uri())

        async def run(executor: InProcessExecutor) -> float:
            job = ClaimedJob(
                id=uuid.uuid4(), attempt=1, request={"kind": "graph", "graph": session}, models={spec.key: spec}
            )
            start = time.perf_counter()
            async for _ in executor.execute(job):
                pass
            return (time.perf_counter() - start) * 1000

        def executor() -> InProcessExecutor:
            runner = GenerationRunner(ModelCache(), device="cpu", dtype=torch.float32)
            empty = DirectoryModelCatalog(Path(files) / "no-models", "")  # the snapshot names every model
            return InProcessExecutor(runner=runner, catalog=empty, store=store)

        cold = [await run(executor()) for _ in range(3)]
        warm_executor = executor()
        await run(warm_executor)
        warm = [await run(warm_executor) for _ in range(5)]
    return {
        "job_cold_cache_ms": round(statistics.median(cold), 1),
        "job_warm_cache_ms": round(statistics.median(warm), 1),
        "job_cold_over_warm": round(statistics.median(cold) / statistics.median(warm), 2),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        figures = {"probe_and_hash": probe_and_hash(folder), "cache": cache(folder)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
