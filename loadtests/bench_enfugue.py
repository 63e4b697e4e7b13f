"""What each Enfugue feature costs on top of a plain text-to-image job, on the tiny models, in one process.

Each variant is an Enfugue request compiled by the production graph builder (`services/generation_graphs.py`, with
the models resolved by hand as `ModelResolver` would) and run by the production graph engine (`InProcessExecutor`,
one warm model cache), so the figures are the engine's own cost of the graph shapes: previews off, no HTTP, no queue.
Variants run in turns (one job of each per round) so load from anything else on the machine falls on all alike.
Ratios are against txt2img on the same base model (the chunked canvas: against the same canvas diffused whole),
measured in the same run. CPU, tiny random-weight models: the
ratios say how much extra work a feature adds (extra denoise steps, decodes, pastes, ControlNet passes), not
what a GPU would show. Prints JSON and writes loadtests/results/enfugue.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
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

# The tiny-model builders the tests use (tests/support), so the bench runs on the same models.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).parent / "results" / "enfugue.json"
SIZE, STEPS = 64, 8


def _spec(path: Path) -> Any:
    from serve_app.domain.models import ModelSpec
    from serve_app.storage.model_probe import probe

    probed = probe(path)
    return ModelSpec(name=path.stem if path.is_file() else path.name, family=probed.base, format=probed.format,
                     path=str(path), type=probed.type, variant=probed.variant or "normal",
                     config_path=probed.config_path)  # fmt: skip


def _models(folder: Path) -> dict[str, Any]:
    from tests.support import tiny_models

    return {
        "sd1": _spec(tiny_models.sd1_folder(folder)),
        "sdxl": _spec(tiny_models.sdxl_folder(folder)),
        "refiner": _spec(tiny_models.sdxl_refiner_folder(folder)),
        "canny": _spec(tiny_models.controlnet_folder(folder)),
        "esrgan": _spec(tiny_models.esrgan(folder, scale=2, name="RealESRGAN_x2plus")),
    }


async def _inputs(store: Any) -> dict[str, str]:
    """An input image, a mask (engine convention: white keeps) and a control image, stored as a job would."""
    from PIL import Image, ImageDraw

    from serve_app.domain.images import image_key

    picture = Image.new("RGB", (SIZE, SIZE), (200, 80, 40))
    ImageDraw.Draw(picture).ellipse((12, 12, 52, 52), fill=(30, 90, 220))
    mask = Image.new("L", (SIZE, SIZE), 255)
    ImageDraw.Draw(mask).rectangle((0, 0, SIZE // 2, SIZE), fill=0)
    names = {}
    for name, image in (("image", picture), ("mask", mask)):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        names[name] = f"bench_{name}.png"
        await store.put(image_key(names[name]), buffer.getvalue(), "image/png")
    return names


def _variants(models: dict[str, Any], inputs: dict[str, str]) -> dict[str, tuple[str, Any, dict[str, Any]]]:
    """name -> (baseline name, GraphModel of the main model, graph)."""
    from serve_app.domain.generation import ControlInput, GenerationRequest, RegionNode, UpscalePass
    from serve_app.services.generation_graphs import GraphExtras, GraphModel, generation_graph

    sd1, sdxl = GraphModel(models["sd1"]), GraphModel(models["sdxl"])
    common = {"prompt": "a red fox", "width": SIZE, "height": SIZE, "steps": STEPS, "seed": 7, "intermediates": False}
    half = SIZE // 2
    requests: dict[str, tuple[str, GraphModel, dict[str, Any], GraphExtras]] = {
        "sd1_txt2img": ("sd1_txt2img", sd1, {}, GraphExtras()),
        "sd1_img2img": ("sd1_txt2img", sd1, {"image": inputs["image"], "strength": 0.8}, GraphExtras()),
        "sd1_inpaint": ("sd1_txt2img", sd1, {"image": inputs["image"], "mask": inputs["mask"]}, GraphExtras()),
        "sd1_two_regions": ("sd1_txt2img", sd1, {"nodes": [RegionNode(w=half, h=SIZE, prompt="a fox"),
                                                          RegionNode(x=half, w=half, h=SIZE, prompt="a tree")]},
                            GraphExtras()),
        "sd1_controlnet_canny": ("sd1_txt2img", sd1, {"control": ControlInput(controlnet="canny",
                                                                              image=inputs["image"])},
                                 GraphExtras(controlnets={"canny": GraphModel(models["canny"])})),
        "sd1_upscale_lanczos_x2": ("sd1_txt2img", sd1, {"upscale": [UpscalePass(scale=2, method="lanczos")]},
                                   GraphExtras()),
        "sd1_upscale_esrgan_x2": ("sd1_txt2img", sd1, {"upscale": [UpscalePass(scale=2, method="esrgan")]},
                                  GraphExtras(upscalers={"esrgan": GraphModel(models["esrgan"])})),
        # A canvas twice the model's size (64 here): whole, and in 64 px windows sliding by 32 (Enfugue's chunking).
        "sd1_128x64": ("sd1_128x64", sd1, {"width": 128, "size": 64, "chunking_size": 0}, GraphExtras()),
        "sd1_128x64_chunked": ("sd1_128x64", sd1, {"width": 128, "size": 64, "chunking_size": 32}, GraphExtras()),
        "sdxl_txt2img": ("sdxl_txt2img", sdxl, {}, GraphExtras()),
        "sdxl_refiner_0.3": ("sdxl_txt2img", sdxl, {"refiner": models["refiner"].name, "refiner_strength": 0.3},
                             GraphExtras(refiner=GraphModel(models["refiner"]))),
    }  # fmt: skip
    variants = {}
    for name, (baseline, main, extra, extras) in requests.items():
        request = GenerationRequest(**(common | extra))
        variants[name] = (baseline, main, generation_graph(request, main, extras=extras))
    return variants


async def measure(folder: Path, rounds: int) -> dict[str, Any]:
    import torch

    from serve_app.domain.jobs import ClaimedJob
    from serve_app.inference.executor import InProcessExecutor
    from serve_app.inference.model_cache import ModelCache
    from serve_app.inference.runner import GenerationRunner
    from serve_app.storage.model_catalog import DirectoryModelCatalog
    from serve_app.storage.objects import make_object_store

    torch.set_num_threads(1)
    models = _models(folder / "models")
    store = make_object_store((folder / "files").as_uri())
    variants = _variants(models, await _inputs(store))
    runner = GenerationRunner(ModelCache(), device="cpu", dtype=torch.float32)
    executor = InProcessExecutor(runner=runner, catalog=DirectoryModelCatalog(folder / "none", ""), store=store)
    snapshot = {spec.key: spec for spec in models.values()}

    async def run(graph: dict[str, Any]) -> float:
        job = ClaimedJob(id=uuid.uuid4(), attempt=1, request={"kind": "graph", "graph": graph}, models=snapshot)
        start = time.perf_counter()
        async for event in executor.execute(job):
            if getattr(event, "kind", None) == "error":
                raise RuntimeError(f"job failed: {event}")
        return (time.perf_counter() - start) * 1000

    for _, _, graph in variants.values():  # warm-up: every model loaded once, first-call costs paid
        await run(graph)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (_, _, graph) in variants.items():
            samples[name].append(await run(graph))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "size": SIZE,
        "steps": STEPS,
        "rounds": rounds,
        "median_ms": {name: round(value, 1) for name, value in medians.items()},
        "vs_txt2img": {name: round(medians[name] / medians[baseline], 2)
                       for name, (baseline, _, _) in variants.items() if name != baseline},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-enfugue-") as temp:
        results = asyncio.run(measure(Path(temp), args.rounds))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
