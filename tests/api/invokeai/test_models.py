"""GET /api/v2/models/ (+ /i/{key}, /get_by_attrs): the catalog as InvokeAI 6.8 model configs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.inference.tiny import ensure_demo_models
from serve_app.services.models import ModelService
from serve_app.storage.model_catalog import DirectoryModelCatalog
from tests.storage.test_model_catalog import SD1_LORA_KEYS, SDXL_LORA_KEYS, write_lora, write_vae

# Field order of a main diffusers config as InvokeAI 6.8.1 sends it (golden 10-models-list.json).
MAIN_DIFFUSERS_FIELDS = [
    "key", "hash", "path", "file_size", "name", "type", "format", "base", "source", "source_type", "description",
    "source_api_response", "cover_image", "submodels", "usage_info", "trigger_phrases", "default_settings", "variant",
    "repo_variant",
]  # fmt: skip
COMMON_FIELDS = MAIN_DIFFUSERS_FIELDS[:15]
DEFAULT_SETTINGS_FIELDS = [
    "vae", "vae_precision", "scheduler", "steps", "cfg_scale", "cfg_rescale_multiplier", "width", "height", "guidance",
]  # fmt: skip


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("invokeai-models")
    ensure_demo_models(root)
    write_lora(root / "loras" / "test-ink.safetensors", SD1_LORA_KEYS)
    write_lora(root / "loras" / "test-ink-xl.safetensors", SDXL_LORA_KEYS)
    write_vae(root / "vae" / "test-vae-xl", base="sdxl")
    (root / "test-checkpoint.safetensors").write_bytes(b"\x00" * 1234)
    return root


def make_client(context: ApiContext) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(context))
    return httpx.AsyncClient(transport=transport, base_url="http://serve-app.test")


@pytest_asyncio.fixture(loop_scope="session")
async def http(models_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    catalog = DirectoryModelCatalog(models_dir, "demo-sd15")
    service = ModelService(catalog, refresh=catalog.refresh, refresh_interval_s=0)
    context = ApiContext(jobs=cast(Any, None), store=cast(Any, None), version="test", models=service)
    async with make_client(context) as client:
        yield client


async def get_json(http: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await http.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def list_models(http: httpx.AsyncClient, **params: Any) -> dict[str, dict[str, Any]]:
    body = await get_json(http, "/api/v2/models/", **params)
    assert list(body) == ["models"]
    return {model["name"]: model for model in body["models"]}


def total_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def test_main_diffusers_config_matches_invokeai_field_for_field(http, models_dir):
    models = await list_models(http)
    sd15 = models["demo-sd15"]
    assert list(sd15) == MAIN_DIFFUSERS_FIELDS
    assert list(sd15["default_settings"]) == DEFAULT_SETTINGS_FIELDS
    path = str(models_dir.absolute() / "demo-sd15")
    assert {k: v for k, v in sd15.items() if k not in ("key", "hash", "file_size")} == {
        "path": path,
        "name": "demo-sd15",
        "type": "main",
        "format": "diffusers",
        "base": "sd-1",
        "source": path,
        "source_type": "path",
        "description": "sd-1 main model demo-sd15",
        "source_api_response": None,
        "cover_image": None,
        "submodels": None,
        "usage_info": None,
        "trigger_phrases": None,
        "default_settings": {**dict.fromkeys(DEFAULT_SETTINGS_FIELDS), "width": 512, "height": 512},
        "variant": "normal",
        "repo_variant": "",
    }
    assert sd15["file_size"] == total_size(models_dir / "demo-sd15")
    assert sd15["hash"].startswith("fingerprint:")
    assert models["demo-sdxl"]["base"] == "sdxl"
    assert models["demo-sdxl"]["default_settings"]["width"] == 1024


async def test_lora_vae_and_checkpoint_configs(http, models_dir):
    models = await list_models(http)
    lora = models["test-ink"]
    assert list(lora) == [*COMMON_FIELDS, "trigger_phrases", "default_settings"]
    assert (lora["type"], lora["format"], lora["base"]) == ("lora", "lycoris", "sd-1")
    assert (lora["trigger_phrases"], lora["default_settings"]) == (None, None)
    assert lora["file_size"] == total_size(models_dir / "loras" / "test-ink.safetensors")
    assert models["test-ink-xl"]["base"] == "sdxl"

    vae = models["test-vae-xl"]
    assert list(vae) == [*COMMON_FIELDS, "repo_variant"]
    assert (vae["type"], vae["format"], vae["base"], vae["repo_variant"]) == ("vae", "diffusers", "sdxl", "")

    checkpoint = models["test-checkpoint.safetensors"]
    assert (checkpoint["type"], checkpoint["format"], checkpoint["base"]) == ("main", "checkpoint", "sd-1")
    assert checkpoint["file_size"] == 1234
    assert {k: checkpoint[k] for k in ("config_path", "converted_at", "prediction_type", "upcast_attention")} == {
        "config_path": "stable-diffusion/v1-inference.yaml",
        "converted_at": None,
        "prediction_type": "epsilon",
        "upcast_attention": False,
    }


async def test_filters(http):
    assert set(await list_models(http, model_type="main", base_models="sd-1")) == {
        "demo-sd15",
        "test-checkpoint.safetensors",
    }
    sdxl_or_sd1_loras = await list_models(http, model_type="lora", base_models=["sdxl", "sd-1"])
    assert {"test-ink", "test-ink-xl"} <= set(sdxl_or_sd1_loras)
    assert {m["type"] for m in sdxl_or_sd1_loras.values()} == {"lora"}
    assert set(await list_models(http, model_name="demo-sdxl")) == {"demo-sdxl"}
    assert set(await list_models(http, model_name="demo")) == set()
    assert {m["format"] for m in (await list_models(http, model_format="lycoris")).values()} == {"lycoris"}
    # Valid InvokeAI values the catalog has none of.
    assert await list_models(http, model_type="controlnet") == {}
    assert await list_models(http, base_models="flux") == {}


async def test_invalid_filter_values_are_422(http):
    for params in ({"model_type": "nope"}, {"base_models": "sd-9"}, {"model_format": "zip"}):
        response = await http.get("/api/v2/models/", params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["loc"][0] == "query"


async def test_get_by_key_matches_the_listing(http):
    models = await list_models(http)
    for model in models.values():
        assert await get_json(http, f"/api/v2/models/i/{model['key']}") == model
    missing = await http.get("/api/v2/models/i/does-not-exist")
    assert (missing.status_code, missing.json()) == (404, {"detail": "model not found"})


async def test_get_by_attrs(http):
    models = await list_models(http)
    found = await get_json(http, "/api/v2/models/get_by_attrs", name="test-ink-xl", type="lora", base="sdxl")
    assert found == models["test-ink-xl"]
    for params in (
        {"name": "test-ink-xl", "type": "lora", "base": "sd-1"},
        {"name": "test-ink-xl", "type": "main", "base": "sdxl"},
        {"name": "nothing", "type": "main", "base": "sd-1"},
    ):
        response = await http.get("/api/v2/models/get_by_attrs", params=params)
        assert (response.status_code, response.json()) == (404, {"detail": "No model found with these attributes"})


async def test_get_by_attrs_missing_params_is_422_like_invokeai(http):
    # 93-err-422-missing-param-get_by_attrs.json
    response = await http.get("/api/v2/models/get_by_attrs", params={"name": "demo-sd15"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"type": "missing", "loc": ["query", "type"], "msg": "Field required", "input": None},
            {"type": "missing", "loc": ["query", "base"], "msg": "Field required", "input": None},
        ]
    }


async def test_fingerprint_is_stable_and_follows_changes(http, models_dir):
    lora_path = models_dir / "loras" / "test-fingerprint.safetensors"
    write_lora(lora_path, SD1_LORA_KEYS)
    url_params = {"name": "test-fingerprint", "type": "lora", "base": "sd-1"}
    first = await get_json(http, "/api/v2/models/get_by_attrs", **url_params)
    assert (await get_json(http, "/api/v2/models/get_by_attrs", **url_params))["hash"] == first["hash"]
    stat = lora_path.stat()
    os.utime(lora_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert (await get_json(http, "/api/v2/models/get_by_attrs", **url_params))["hash"] != first["hash"]


async def test_models_copied_in_later_are_listed(http, models_dir):
    assert "test-late" not in await list_models(http)
    write_vae(models_dir / "vae" / "test-late")
    late = (await list_models(http))["test-late"]
    assert (late["type"], late["base"]) == ("vae", "sd-1")


async def test_without_a_model_service_the_routes_are_unavailable():
    async with make_client(ApiContext(jobs=cast(Any, None), store=cast(Any, None), version="test")) as client:
        response = await client.get("/api/v2/models/")
    assert response.status_code == 503
    assert "detail" in response.json()
