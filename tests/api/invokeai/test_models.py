"""The InvokeAI model manager (`/api/v2/models`) over the Postgres registry: listings, records, renames, deletes,
cover images, folder scans, conversion, starter models and cache stats, compared with InvokeAI 6.8.1's responses."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.domain.models import ModelChanges, derived_key
from serve_app.inference.tiny import ensure_demo_models
from serve_app.services.models import CACHE_CLEAR_EVENT, ModelService
from serve_app.serving.wiring import scan_models_folder
from serve_app.storage.model_hash import hash_model, model_size
from serve_app.storage.model_probe import probe
from serve_app.storage.model_registry import PgCacheStats, PgModelRegistry, PgModelSettings
from serve_app.storage.objects import FileObjectStore
from tests.services.test_model_service import convert_checkpoint
from tests.storage.test_model_catalog import SD1_CHECKPOINT, SD1_LORA_KEYS, SDXL_LORA_KEYS, write_lora, write_vae
from tests.support import tiny_models
from tests.support.golden import golden_body
from tests.support.recording_bus import RecordingBus

pytestmark = pytest.mark.timeout(120)

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
# What differs between the recorded model and ours: where it lives and what its bytes are.
LOCAL_FIELDS = ("key", "hash", "path", "file_size", "source")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("invokeai-models")
    ensure_demo_models(root)
    write_lora(root / "loras" / "test-ink.safetensors", SD1_LORA_KEYS)
    write_lora(root / "loras" / "test-ink-xl.safetensors", SDXL_LORA_KEYS)
    write_vae(root / "vae" / "test-vae-xl", base="sdxl")
    write_lora(root / "test-checkpoint.safetensors", SD1_CHECKPOINT)  # tensor names of an SD1 checkpoint
    return root


@pytest.fixture(scope="module")
def imports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models outside the models folder that installs may read (as the golden's `<anchor-dir>`)."""
    root = tmp_path_factory.mktemp("anchor-dir")
    tiny_models.sd1_folder(root, name="tiny-sd15")
    tiny_models.sd1_single_file(root, name="tiny-sd1-file")
    tiny_models.peft_lora(root, name="tiny-lora")
    (root / "notes.txt").write_text("not a model")
    return root


def make_client(context: ApiContext) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(context))
    return httpx.AsyncClient(transport=transport, base_url="http://serve-app.test")


@dataclass
class Models:
    """An app whose only collaborator is a ModelService on this test's database."""

    http: httpx.AsyncClient
    service: ModelService
    models_dir: Path
    bus: RecordingBus
    cache_stats: PgCacheStats


@pytest_asyncio.fixture(loop_scope="session")
async def make_models(pool: Any, tmp_path: Path, imports: Path) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    async def make(models_dir: Path) -> Models:
        bus = RecordingBus()
        cache_stats = PgCacheStats(pool)
        service = ModelService(
            PgModelRegistry(pool),
            models_dir=models_dir,
            store=FileObjectStore(tmp_path / "objects"),
            bus=bus,
            cache_stats=cache_stats,
            settings=PgModelSettings(pool),
            probe=probe,
            hasher=hash_model,
            sizer=model_size,
            scan=scan_models_folder,
            converter=convert_checkpoint,
            allowed_roots=[imports],
            resync_interval_s=0,
        )
        await service.sync_folder()
        context = ApiContext(jobs=cast(Any, None), store=cast(Any, None), version="test", models=service)
        client = make_client(context)
        clients.append(client)
        return Models(http=client, service=service, models_dir=models_dir, bus=bus, cache_stats=cache_stats)

    yield make
    for client in clients:
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def shared(make_models: Any, models_dir: Path) -> Models:
    """The module's models folder (demo models, test LoRAs and VAE); tests here only add files to it."""
    models: Models = await make_models(models_dir)
    return models


@pytest_asyncio.fixture(loop_scope="session")
async def own(make_models: Any, tmp_path: Path) -> Models:
    """An empty models folder of this test's own, for tests that install, rename and delete."""
    folder = tmp_path / "models"
    folder.mkdir()
    models: Models = await make_models(folder)
    return models


@pytest.fixture
def http(shared: Models) -> httpx.AsyncClient:
    return shared.http


async def get_json(http: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await http.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def list_models(http: httpx.AsyncClient, **params: Any) -> dict[str, dict[str, Any]]:
    body = await get_json(http, "/api/v2/models/", **params)
    assert list(body) == ["models"]
    return {model["name"]: model for model in body["models"]}


async def install(models: Models, path: Path, *, inplace: bool = True, **changes: Any) -> dict[str, Any]:
    record = await models.service.register_local(
        path, inplace=inplace, changes=ModelChanges(**changes), source=str(path)
    )
    return cast(dict[str, Any], await get_json(models.http, f"/api/v2/models/i/{record.key}"))


def total_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


# -- listing and reading -------------------------------------------------------------------------------------


async def test_main_diffusers_config_matches_invokeai_field_for_field(http, models_dir):
    models = await list_models(http)
    sd15 = models["demo-sd15"]
    assert list(sd15) == MAIN_DIFFUSERS_FIELDS
    assert list(sd15["default_settings"]) == DEFAULT_SETTINGS_FIELDS
    path = str(models_dir.absolute() / "demo-sd15")
    assert {k: v for k, v in sd15.items() if k not in ("hash", "file_size")} == {
        "key": derived_key("main", "demo-sd15"),  # the same key as before the registry, on every start
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


async def test_an_installed_model_matches_the_golden_records(own, imports):
    config = await install(own, imports / "tiny-sd15")

    for golden in (golden_body("11-models-i-key.json"), golden_body("12-models-get_by_attrs.json")):
        assert list(config) == list(golden)
        assert {k: v for k, v in config.items() if k not in LOCAL_FIELDS} == {
            k: v for k, v in golden.items() if k not in LOCAL_FIELDS
        }
    assert config["hash"].startswith("blake3:")
    assert config["path"] == config["source"] == str(imports / "tiny-sd15")
    by_attrs = await get_json(own.http, "/api/v2/models/get_by_attrs", name="tiny-sd15", type="main", base="sd-1")
    assert by_attrs == config
    for name in ("10-models-list.json", "16-models-list-filtered.json"):
        params = {"model_type": "main", "base_models": "sd-1"} if name.startswith("16") else {}
        listed = await get_json(own.http, "/api/v2/models/", **params)
        assert listed == {"models": [config]}
        assert [list(m) for m in golden_body(name)["models"]] == [list(config)]


async def test_lora_vae_and_checkpoint_configs(http, models_dir):
    models = await list_models(http)
    lora = models["test-ink"]
    assert list(lora) == [*COMMON_FIELDS, "trigger_phrases", "default_settings"]
    assert (lora["type"], lora["format"], lora["base"]) == ("lora", "lycoris", "sd-1")
    assert (lora["trigger_phrases"], lora["default_settings"]) == (None, None)
    assert lora["file_size"] == total_size(models_dir / "loras" / "test-ink.safetensors")
    assert models["test-ink-xl"]["base"] == "sdxl"

    # InvokeAI 6.8.1's VAEDiffusersConfig has no repo_variant (openapi.json).
    vae = models["test-vae-xl"]
    assert list(vae) == COMMON_FIELDS
    assert (vae["type"], vae["format"], vae["base"]) == ("vae", "diffusers", "sdxl")

    checkpoint = models["test-checkpoint.safetensors"]
    assert (checkpoint["type"], checkpoint["format"], checkpoint["base"]) == ("main", "checkpoint", "sd-1")
    assert checkpoint["file_size"] == total_size(models_dir / "test-checkpoint.safetensors")
    assert list(checkpoint) == [
        *COMMON_FIELDS, "trigger_phrases", "default_settings", "variant", "config_path", "converted_at",
        "prediction_type", "upcast_attention",
    ]  # fmt: skip
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
    # Valid InvokeAI values the registry has none of.
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
    assert (missing.status_code, missing.json()) == (404, golden_body("95-err-404-model.json"))


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
    response = await http.get("/api/v2/models/get_by_attrs", params={"name": "demo-sd15"})
    assert response.status_code == 422
    assert response.json() == golden_body("93-err-422-missing-param-get_by_attrs.json")


async def test_models_found_in_the_folder_keep_their_fingerprint(http):
    url_params = {"name": "test-ink", "type": "lora", "base": "sd-1"}
    first = await get_json(http, "/api/v2/models/get_by_attrs", **url_params)
    assert first["hash"].startswith("fingerprint:")
    # Listings re-scan the folder; a model already registered is left as it is.
    await list_models(http)
    assert await get_json(http, "/api/v2/models/get_by_attrs", **url_params) == first


async def test_models_copied_in_later_are_listed(http, models_dir):
    assert "test-late" not in await list_models(http)
    write_vae(models_dir / "vae" / "test-late")
    late = (await list_models(http))["test-late"]
    assert (late["type"], late["base"], late["key"]) == ("vae", "sd-1", derived_key("vae", "test-late"))


async def test_without_a_model_service_the_routes_are_unavailable():
    async with make_client(ApiContext(jobs=cast(Any, None), store=cast(Any, None), version="test")) as client:
        for method, url in (("GET", "/api/v2/models/"), ("GET", "/api/v2/models/stats"),
                            ("GET", "/api/v1/model_relationships/i/x")):  # fmt: skip
            response = await client.request(method, url)
            assert response.status_code == 503
            assert "detail" in response.json()


# -- changing and deleting -----------------------------------------------------------------------------------


async def test_patch_renames_and_syncs_the_path(own, imports):
    config = await install(own, imports / "tiny-lora.safetensors", inplace=False)
    assert config["path"] == str(own.models_dir / "sd-1" / "lora" / "tiny-lora.safetensors")

    response = await own.http.patch(
        f"/api/v2/models/i/{config['key']}",
        json={"name": "ink", "trigger_phrases": ["inked"], "default_settings": {"weight": 0.75}},
    )

    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["name"], updated["trigger_phrases"], updated["default_settings"]) == (
        "ink", ["inked"], {"weight": 0.75},
    )  # fmt: skip
    assert updated["path"] == str(own.models_dir / "sd-1" / "lora" / "ink.safetensors")
    assert Path(updated["path"]).is_file() and not Path(config["path"]).exists()
    assert await get_json(own.http, f"/api/v2/models/i/{config['key']}") == updated


async def test_patch_errors(own, imports, tmp_path):
    one = await install(own, imports / "tiny-lora.safetensors", inplace=False, name="one")
    await install(own, imports / "tiny-lora.safetensors", inplace=False, name="two")
    url = f"/api/v2/models/i/{one['key']}"

    clash = await own.http.patch(url, json={"name": "two"})
    assert clash.status_code == 409 and "already exists" in clash.json()["detail"]
    missing = await own.http.patch("/api/v2/models/i/nope", json={"name": "x"})
    assert (missing.status_code, missing.json()) == (404, {"detail": "model not found"})
    outside = await own.http.patch(url, json={"path": str(tmp_path)})
    assert outside.status_code == 403
    for body in ({"base": "sd-9"}, {"default_settings": {"weight": 5}}, {"name": ""}):
        response = await own.http.patch(url, json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"][0] == "body"
    assert await get_json(own.http, url) == one


async def test_delete(own, imports):
    copied = await install(own, imports / "tiny-sd15", inplace=False)
    in_place = await install(own, imports / "tiny-lora.safetensors")

    for config in (copied, in_place):
        response = await own.http.delete(f"/api/v2/models/i/{config['key']}")
        assert (response.status_code, response.content) == (204, b"")
        assert (await own.http.get(f"/api/v2/models/i/{config['key']}")).status_code == 404

    assert not Path(copied["path"]).exists()
    assert Path(in_place["path"]).is_file()  # outside the models folder: never deleted
    again = await own.http.delete(f"/api/v2/models/i/{copied['key']}")
    assert (again.status_code, again.json()) == (404, {"detail": "model not found"})


# -- cover images --------------------------------------------------------------------------------------------


async def test_cover_image_round_trip(own, imports):
    config = await install(own, imports / "tiny-lora.safetensors")
    url = f"/api/v2/models/i/{config['key']}/image"
    assert (await own.http.get(url)).json() == {"detail": "Not Found"}

    uploaded = await own.http.patch(url, files={"image": ("cover.jpg", jpeg(512, 384), "image/jpeg")})
    assert (uploaded.status_code, uploaded.json()) == (200, None)

    image = await own.http.get(url)
    assert (image.status_code, image.headers["content-type"]) == (200, "image/png")
    with Image.open(io.BytesIO(image.content)) as decoded:
        assert decoded.size == (256, 192)
    cover = (await get_json(own.http, f"/api/v2/models/i/{config['key']}"))["cover_image"]
    assert cover.startswith(f"api/v2/models/i/{config['key']}/image?")
    listed = (await list_models(own.http))["tiny-lora"]
    assert listed["cover_image"] == cover

    not_image = await own.http.patch(url, files={"image": ("notes.txt", b"hello", "text/plain")})
    assert (not_image.status_code, not_image.json()) == (415, {"detail": "Failed to read image"})
    missing = await own.http.patch("/api/v2/models/i/nope/image", files={"image": ("c.jpg", jpeg(8, 8), "image/jpeg")})
    assert missing.status_code == 404
    no_file = await own.http.patch(url)
    assert no_file.status_code == 422

    deleted = await own.http.delete(url)
    assert deleted.status_code == 204
    assert (await own.http.get(url)).status_code == 404
    assert (await get_json(own.http, f"/api/v2/models/i/{config['key']}"))["cover_image"] is None
    assert (await own.http.delete("/api/v2/models/i/nope/image")).status_code == 404


# -- folders and conversion ----------------------------------------------------------------------------------


async def test_scan_folder(own, imports, tmp_path):
    await install(own, imports / "tiny-lora.safetensors")

    found = await get_json(own.http, "/api/v2/models/scan_folder", scan_path=str(imports))
    assert found == [
        {"path": str(imports / "tiny-lora.safetensors"), "is_installed": True},
        {"path": str(imports / "tiny-sd1-file.safetensors"), "is_installed": False},
        {"path": str(imports / "tiny-sd15"), "is_installed": False},
    ]
    for params in ({}, {"scan_path": str(imports / "notes.txt")}, {"scan_path": str(imports / "missing")}):
        response = await own.http.get("/api/v2/models/scan_folder", params=params)
        assert response.status_code == 400, params
    outside = await own.http.get("/api/v2/models/scan_folder", params={"scan_path": str(tmp_path)})
    assert outside.status_code == 403
    traversal = await own.http.get("/api/v2/models/scan_folder", params={"scan_path": f"{imports}/../.."})
    assert traversal.status_code == 403


async def test_convert(own, imports):
    checkpoint = await install(own, imports / "tiny-sd1-file.safetensors", inplace=False)
    lora = await install(own, imports / "tiny-lora.safetensors")

    unknown = await own.http.put("/api/v2/models/convert/nope")
    assert (unknown.status_code, unknown.json()) == (424, {"detail": "model not found"})
    not_checkpoint = await own.http.put(f"/api/v2/models/convert/{lora['key']}")
    assert not_checkpoint.status_code == 400
    assert not_checkpoint.json() == {"detail": f"The model with key {lora['key']} is not a main checkpoint model."}

    response = await own.http.put(f"/api/v2/models/convert/{checkpoint['key']}")

    assert response.status_code == 200, response.text
    converted = response.json()
    assert list(converted) == MAIN_DIFFUSERS_FIELDS
    assert (converted["name"], converted["format"], converted["base"]) == ("tiny-sd1-file", "diffusers", "sd-1")
    assert converted["key"] != checkpoint["key"] and converted["hash"] != checkpoint["hash"]
    assert converted["path"] == str(own.models_dir / "sd-1" / "main" / "tiny-sd1-file")
    assert (await own.http.get(f"/api/v2/models/i/{checkpoint['key']}")).status_code == 404


# -- starter models, caches ----------------------------------------------------------------------------------


async def test_starter_models_shape_and_installed_marks(own, imports):
    golden = golden_body("13-models-starter_models.json")
    body = await get_json(own.http, "/api/v2/models/starter_models")

    # The recording kept only the first starter models; `__total` keys are its notes, not InvokeAI's fields.
    assert list(body) == [key for key in golden if "__" not in key]
    assert {key: bundle["name"] for key, bundle in body["starter_bundles"].items()} == {
        key: golden["starter_bundles"][key]["name"] for key in ("sd-1", "sdxl")
    }
    golden_models = {
        (m["source"], m["base"]): m for bundle in golden["starter_bundles"].values() for m in bundle["models"]
    }
    ours = [*body["starter_models"], *(m for bundle in body["starter_bundles"].values() for m in bundle["models"])]
    field_order = list(golden["starter_models"][0])
    for model in ours:
        assert list(model) == field_order
        for dependency in model["dependencies"]:
            assert list(dependency) == field_order[:-1]
        # Where InvokeAI ships the same model, ours is the same entry.
        if (model["source"], model["base"]) in golden_models:
            assert model == golden_models[(model["source"], model["base"])]
    assert {m["base"] for m in ours} >= {"sd-1", "sd-2", "sdxl", "sdxl-refiner", "any"}
    assert {m["type"] for m in ours} >= {"main", "vae", "controlnet", "ip_adapter", "spandrel_image_to_image"}
    assert not any(m["is_installed"] for m in ours)

    # A registered model whose source is a starter model's marks it installed, and drops it from dependencies.
    await own.service.register_local(
        imports / "tiny-lora.safetensors",
        inplace=True,
        changes=ModelChanges(name="fp16-fix"),
        source="madebyollin/sdxl-vae-fp16-fix",
    )
    body = await get_json(own.http, "/api/v2/models/starter_models")
    by_name = {m["name"]: m for m in body["starter_models"]}
    assert by_name["sdxl-vae-fp16-fix"]["is_installed"] is True
    assert by_name["Juggernaut XL v9"]["dependencies"] == []
    assert by_name["Standard Reference (IP Adapter)"]["dependencies"][0]["source"] == (
        "InvokeAI/ip_adapter_sd_image_encoder"
    )


async def test_stats_are_null_until_a_replica_reports_then_summed(own):
    response = await own.http.get("/api/v2/models/stats")
    assert (response.status_code, response.json()) == (200, golden_body("14-models-stats-before-load.json"))

    recorded = golden_body("35-models-stats-after-load.json")
    await own.cache_stats.report("replica-1", recorded)
    await own.cache_stats.report(
        "replica-2",
        {**recorded, "high_watermark": 10, "loaded_model_sizes": {"sdxl:main:other:unet": 7}},
    )
    stats = await get_json(own.http, "/api/v2/models/stats")

    assert list(stats) == list(recorded)
    assert stats == {
        "hits": 2 * recorded["hits"],
        "misses": 2 * recorded["misses"],
        "high_watermark": recorded["high_watermark"],
        "in_cache": 2 * recorded["in_cache"],
        "cleared": 2 * recorded["cleared"],
        "cache_size": 2 * recorded["cache_size"],
        "loaded_model_sizes": {**recorded["loaded_model_sizes"], "sdxl:main:other:unet": 7},
    }


async def test_empty_model_cache_tells_the_replicas(own):
    response = await own.http.post("/api/v2/models/empty_model_cache")
    assert (response.status_code, response.json()) == (200, None)
    message = await own.bus.wait_for(CACHE_CLEAR_EVENT)
    assert (message.room, message.data) == (None, {})
