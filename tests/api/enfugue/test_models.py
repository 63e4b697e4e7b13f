"""Enfugue's `/api/models` presets and model listings through the ASGI app, on a real Postgres.

The CRUD cases replay the examples of the Enfugue JSON-API wiki (seeds/enfugue-json-api.txt) and compare the
whole response bodies; the listings read a registry holding the demo models, registered as at Ingress startup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from serve_app.domain.models import ModelFamily, ModelFormat, ModelRecord, ModelType
from serve_app.services.jobs import JobService
from serve_app.serving.args import StorageArgs
from serve_app.serving.wiring import build_catalog, build_store
from serve_app.storage.model_registry import PgModelRegistry
from tests.api.conftest import TEST_LIMITS
from tests.api.enfugue.preset_support import preset_client, register_folder
from tests.api.test_enfugue_validation import assert_enfugue_error

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

PROMPT = (
    "RAW photo, highly detailed, intricate detail, 4k, 8k, sharp focus, ultra-detailed, portrait photography, "
    "cinestill 800t, Fujifilm XT3"
)
NEGATIVE = (
    "deformed, (((distorted face))), ((malformed face)), blurry, bad anatomy, bad eyes, disfigured, mutation, "
    "mutated, extra limb, missing limb, blurry, floating limbs, disconnected limbs, malformed hands, out of focus, "
    "long neck, long body, mutated hands and fingers, out of frame, watermark, cut off, bad art, grainy"
)
REALISTIC = {"name": "Realistic Vision", "checkpoint": "realisticVisionV40_v40VAE.safetensors", "prompt": PROMPT,
             "negative_prompt": NEGATIVE}  # fmt: skip
SDXL = {"name": "SDXL", "checkpoint": "sd_xl_base_1.0.safetensors", "size": 1024, "prompt": PROMPT,
        "negative_prompt": NEGATIVE, "vae": "xl16", "refiner": "sd_xl_refiner_1.0.safetensors", "refiner_size": 1024,
        "guidance_scale": 5, "height": 1024, "width": 1024}  # fmt: skip
ENFUGUE_JSON = "application/vnd.api+json"


def diffusion_model(name: str, model: str, size: int = 512, prompt: str = "", negative_prompt: str = "") -> dict:
    attributes = {"model": model, "name": name, "negative_prompt": negative_prompt, "prompt": prompt, "size": size}
    return {"type": "DiffusionModel", "attributes": attributes}


@pytest_asyncio.fixture(loop_scope="session")
async def api(pool, repo, models_dir: Path, tmp_path: Path) -> AsyncIterator:
    """The app with presets and a registry holding the demo models; jobs are stored, never run."""
    await register_folder(pool, models_dir)
    store = build_store(StorageArgs(url=(tmp_path / "files").as_uri()))
    jobs = JobService(repo=repo, catalog=build_catalog(str(models_dir), "demo-sd15"), store=store, limits=TEST_LIMITS)
    async with preset_client(pool, jobs, store) as client:
        yield client


async def assert_presets(api, *names: str) -> None:
    body = (await api.get("/api/models")).json()
    assert [item["attributes"]["name"] for item in body["data"]] == list(names)
    assert body["meta"]["count"] == len(names)


async def test_wiki_create_patch_delete(api):
    response = await api.post("/api/models", json={"name": "My Model", "checkpoint": "sd_xl_base_1.0.safetensors"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(ENFUGUE_JSON)
    expected = {"meta": {"params": {}}, "data": diffusion_model("My Model", "sd_xl_base_1.0.safetensors")}
    assert response.json() == expected

    response = await api.patch("/api/models/My%20Model", json={"scheduler": "ddim"})
    assert response.json() == expected
    body = (await api.get("/api/models/My Model", params={"include": "scheduler"})).json()
    assert body["data"][0]["include"] == {
        "scheduler": [
            {"type": "DiffusionModelScheduler",
             "attributes": {"context": "", "diffusion_model_name": "My Model", "name": "ddim"}}
        ]
    }  # fmt: skip

    response = await api.delete("/api/models/My%20Model")
    assert (response.status_code, response.content) == (200, b"")  # Enfugue's handler formats nothing
    assert_enfugue_error(await api.get("/api/models/My Model"), 404, "NotFoundError", "name=My Model")
    await assert_presets(api)


async def test_wiki_listing_and_include(api):
    for body in (SDXL, REALISTIC):
        assert (await api.post("/api/models", json=body)).status_code == 200
    realistic = diffusion_model("Realistic Vision", REALISTIC["checkpoint"], 512, PROMPT, NEGATIVE)
    sdxl = diffusion_model("SDXL", "sd_xl_base_1.0.safetensors", 1024, PROMPT, NEGATIVE)
    assert (await api.get("/api/models")).json() == {"meta": {"params": {}, "count": 2}, "data": [realistic, sdxl]}

    response = await api.get("/api/models/SDXL?include=vae&include=refiner&include=config")
    config = [
        {"type": "DiffusionModelDefaultConfiguration",
         "attributes": {"configuration_key": key, "configuration_value": value, "diffusion_model_name": "SDXL"}}
        for key, value in (("guidance_scale", 5), ("height", 1024), ("width", 1024))
    ]  # fmt: skip
    assert response.json() == {
        "meta": {"params": {"include": ["vae", "refiner", "config"]}, "count": 1},
        "data": [
            {
                **sdxl,
                "include": {
                    "vae": [{"type": "DiffusionModelVAE", "attributes": {"diffusion_model_name": "SDXL",
                                                                         "name": "xl16"}}],
                    "refiner": [{"type": "DiffusionModelRefiner",
                                 "attributes": {"diffusion_model_name": "SDXL",
                                                "model": "sd_xl_refiner_1.0.safetensors", "size": 1024}}],
                    "config": config,
                },
            }
        ],
    }  # fmt: skip


async def test_every_relation_and_patch_replaces_them_wholesale(api):
    body = {
        "name": "Full", "checkpoint": "base.safetensors", "size": "768", "inpainter": "inpaint.ckpt",
        "inpainter_size": 512, "refiner_vae": "xl", "inpainter_vae": "mse", "scheduler": "",
        "lora": [{"model": "a.safetensors", "weight": 0.5}, "b.safetensors"], "lycoris": {"model": "c", "weight": "2"},
        "inversion": ["easyneg.pt", {"model": "other.pt"}], "num_inference_steps": 20, "upscale": ["esrgan"],
        "not_a_default": 1,
    }  # fmt: skip
    assert (await api.post("/api/models", json=body)).status_code == 200
    include = ["refiner", "inpainter", "vae", "refiner_vae", "inpainter_vae", "scheduler", "lora", "lycoris",
               "inversion", "config"]  # fmt: skip
    item = (await api.get("/api/models/Full", params={"include": include})).json()["data"][0]
    assert item["attributes"]["size"] == 768
    relation = lambda cls, **attributes: [{"type": cls, "attributes": {"diffusion_model_name": "Full", **attributes}}]  # noqa: E731
    assert item["include"] == {
        "refiner": [],
        "inpainter": relation("DiffusionModelInpainter", model="inpaint.ckpt", size=512),
        "vae": [],
        "refiner_vae": relation("DiffusionModelRefinerVAE", name="xl"),
        "inpainter_vae": relation("DiffusionModelInpainterVAE", name="mse"),
        "scheduler": [],
        "lora": relation("DiffusionModelLora", model="a.safetensors", weight=0.5)
        + relation("DiffusionModelLora", model="b.safetensors", weight=1.0),
        "lycoris": relation("DiffusionModelLycoris", model="c", weight=2.0),
        "inversion": relation("DiffusionModelInversion", model="easyneg.pt")
        + relation("DiffusionModelInversion", model="other.pt"),
        "config": [
            {"type": "DiffusionModelDefaultConfiguration",
             "attributes": {"configuration_key": key, "configuration_value": value, "diffusion_model_name": "Full"}}
            for key, value in (("num_inference_steps", 20), ("upscale", ["esrgan"]))
        ],
    }  # fmt: skip

    # PATCH keeps the columns it is not given, replaces every relation, and may rename.
    response = await api.patch("/api/models/Full", json={"name": "Renamed", "lora": "d.safetensors"})
    assert response.json()["data"] == diffusion_model("Renamed", "base.safetensors", 768)
    item = (await api.get("/api/models/Renamed", params={"include": include})).json()["data"][0]
    assert {name: len(rows) for name, rows in item["include"].items() if rows} == {"lora": 1}
    assert item["include"]["lora"][0]["attributes"]["model"] == "d.safetensors"
    await assert_presets(api, "Renamed")


async def test_limit_and_offset(api):
    for name in ("a", "b", "c"):
        await api.post("/api/models", json={"name": name, "checkpoint": "x.ckpt"})
    body = (await api.get("/api/models", params={"limit": 2, "offset": 1})).json()
    assert [item["attributes"]["name"] for item in body["data"]] == ["b", "c"]
    assert body["meta"] == {"params": {"limit": ["2"], "offset": ["1"]}, "count": 3}
    body = (await api.get("/api/models", params={"limit": 0})).json()
    assert len(body["data"]) == 3
    assert_enfugue_error(await api.get("/api/models", params={"limit": "many"}), 400, "BadRequestError", "limit")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"checkpoint": "x.ckpt"}, "Missing required parameter 'name'"),
        ({"name": "", "checkpoint": "x.ckpt"}, "Missing required parameter 'name'"),
        ({"name": "n"}, "Missing required parameter 'checkpoint'"),
        ({"name": "n", "checkpoint": "x.ckpt", "lora": [{"weight": 1}]},
         "Bad model format - missing required dictionary key `model`"),
        ({"name": "n", "checkpoint": "x.ckpt", "lora": [["nested"]]}, "Bad format for lora - must be a string"),
        ({"name": "n", "checkpoint": "x.ckpt", "lycoris": [{"model": "m", "weight": "heavy"}]},
         "Bad format for lycoris - `weight` must be a number"),
        ({"name": "n", "checkpoint": "x.ckpt", "inversion": 3}, "Bad format for inversion"),
        ({"name": "n", "checkpoint": "x.ckpt", "scheduler": "warp"}, "Unknown scheduler warp"),
        ({"name": "n", "checkpoint": "x.ckpt", "size": 7}, "size"),
        ({"name": "n", "checkpoint": "x.ckpt", "width": "wide"}, "width"),
    ],
)  # fmt: skip
async def test_bad_presets_are_400_and_nothing_is_stored(api, body, detail):
    assert_enfugue_error(await api.post("/api/models", json=body), 400, "BadRequestError", detail)
    await assert_presets(api)


async def test_unknown_include_is_400(api):
    await api.post("/api/models", json=REALISTIC)
    response = await api.get("/api/models", params={"include": ["vae", "refiner.vae"]})
    assert_enfugue_error(response, 400, "BadRequestError", "Unknown or bad relationship refiner.vae")


async def test_unknown_names_are_404(api):
    for response in (
        await api.get("/api/models/ghost"),
        await api.patch("/api/models/ghost", json={"checkpoint": "x.ckpt"}),
        await api.delete("/api/models/ghost"),
        await api.get("/api/models/ghost/status"),
    ):
        assert_enfugue_error(response, 404, "NotFoundError", "No DiffusionModel found with name=ghost")
    await assert_presets(api)


async def test_name_clashes_are_409(api):
    await api.post("/api/models", json=REALISTIC)
    await api.post("/api/models", json={"name": "Other", "checkpoint": "o.ckpt"})
    response = await api.post("/api/models", json={**REALISTIC, "checkpoint": "changed.ckpt"})
    assert_enfugue_error(response, 409, "StateConflictError", "Realistic Vision already exists")
    response = await api.patch("/api/models/Other", json={"name": "Realistic Vision"})
    assert_enfugue_error(response, 409, "StateConflictError")
    models = (await api.get("/api/models")).json()["data"]
    assert [(item["attributes"]["name"], item["attributes"]["model"]) for item in models] == [
        ("Other", "o.ckpt"), ("Realistic Vision", REALISTIC["checkpoint"]),
    ]  # fmt: skip


async def test_listings_include_the_demo_models(api, pool):
    registry = PgModelRegistry(pool)
    embedding = ModelRecord(
        key="emb-1", hash="blake3:e", path="/elsewhere/embeddings/easyneg.pt", file_size=1, name="easyneg",
        base=ModelFamily.SD1, type=ModelType.EMBEDDING, format=ModelFormat.EMBEDDING_FILE, source="/x/easyneg.pt",
    )  # fmt: skip
    single = embedding.model_copy(update={"key": "main-1", "path": "/elsewhere/sd-1/main/dreamy.safetensors",
                                          "name": "dreamy", "type": ModelType.MAIN,
                                          "format": ModelFormat.CHECKPOINT})  # fmt: skip
    lycoris = embedding.model_copy(update={"key": "loha-1", "path": "/elsewhere/lycoris/hada.safetensors",
                                           "name": "hada", "type": ModelType.LORA,
                                           "format": ModelFormat.LYCORIS})  # fmt: skip
    for record in (embedding, single, lycoris):
        await registry.add(record)
    await api.post("/api/models", json=REALISTIC)

    async def data(path: str):
        response = await api.get(path)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    assert await data("/api/checkpoints") == ["demo-sd15", "demo-sdxl", "dreamy.safetensors"]
    assert await data("/api/lora") == ["demo-lora-sd15.safetensors"]
    assert await data("/api/lycoris") == ["hada.safetensors"]
    assert await data("/api/inversions") == ["easyneg.pt"]
    assert await data("/api/model-options") == [
        {"type": "checkpoint", "name": "dreamy.safetensors"},
        {"type": "model", "name": "Realistic Vision"},
    ]


async def test_status(api):
    await api.post("/api/models", json={"name": "Demo", "checkpoint": "demo-sdxl", "inpainter": "missing.ckpt"})
    response = await api.get("/api/models/Demo/status")
    assert response.json()["data"] == {
        "model": {"supported": True, "xl": True, "ready": True},
        "refiner": None,
        "inpainter": {"supported": False, "xl": False, "ready": False},
        "tensorrt": {
            "base": {"supported": False, "xl": True, "ready": False},
            "inpainter": {"supported": False, "xl": False, "ready": False},
            "refiner": None,
        },
    }


async def test_without_presets_configured_the_routes_are_503(client):
    # The in-process stack's app has no PresetService.
    for path in ("/api/models", "/api/checkpoints", "/api/lora"):
        assert_enfugue_error(await client.get(path), 503, "ServiceUnavailableError", "not configured")
