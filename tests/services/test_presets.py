"""PresetService (validation, status, listings) and ModelResolver (which models a request means) over the real
Postgres registry and preset store, with a models folder the catalog scans for what the registry lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve_app.domain.errors import InvalidRequest, ModelNotFound
from serve_app.domain.generation import GenerationRequest, RegionNode
from serve_app.domain.models import ModelFamily, ModelFormat, ModelRecord, ModelType, derived_key
from serve_app.domain.presets import ModelPreset, WeightedModel
from serve_app.services.generation_graphs import GraphModel, txt2img_graph
from serve_app.services.model_resolution import ModelResolver, activate_embeddings, best_matches
from serve_app.services.presets import PresetService
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.model_registry import PgModelRegistry
from serve_app.storage.preset_repository import PgPresetStore

pytestmark = pytest.mark.timeout(60)

ROOT = "/models"


def record(name: str, type_: ModelType, base: ModelFamily, path: str, *, fmt: ModelFormat | None = None,
           source: str | None = None, key: str | None = None) -> ModelRecord:  # fmt: skip
    fmt = fmt or (ModelFormat.CHECKPOINT if path.endswith((".safetensors", ".ckpt")) else ModelFormat.DIFFUSERS)
    return ModelRecord(
        key=key or derived_key(type_, name), hash=f"blake3:{name}", path=path, file_size=1, name=name, base=base,
        type=type_, format=fmt, source=source or path,
    )  # fmt: skip


MAIN_FILE = record("realistic", ModelType.MAIN, ModelFamily.SD1, f"{ROOT}/sd-1/main/realistic.safetensors")
MAIN_FOLDER = record("demo-sd15", ModelType.MAIN, ModelFamily.SD1, f"{ROOT}/demo-sd15")
MAIN_XL = record("sd_xl_base_1.0.safetensors", ModelType.MAIN, ModelFamily.SDXL, f"{ROOT}/sd_xl_base_1.0.safetensors")
LORA = record("detail", ModelType.LORA, ModelFamily.SD1, f"{ROOT}/loras/detail.safetensors", fmt=ModelFormat.LYCORIS)
LORA_XL = record("xl-style", ModelType.LORA, ModelFamily.SDXL, f"{ROOT}/sdxl/lora/xl-style.safetensors",
                 fmt=ModelFormat.LYCORIS)  # fmt: skip
LOHA = record("hada", ModelType.LORA, ModelFamily.SD1, f"{ROOT}/lycoris/hada.safetensors", fmt=ModelFormat.LYCORIS)
EMBEDDING = record("easyneg", ModelType.EMBEDDING, ModelFamily.SD1, f"{ROOT}/embeddings/easyneg.pt",
                   fmt=ModelFormat.EMBEDDING_FILE)  # fmt: skip
VAE_MSE = record("sd-vae-ft-mse", ModelType.VAE, ModelFamily.SD1, f"{ROOT}/sd-1/vae/sd-vae-ft-mse",
                 source="stabilityai/sd-vae-ft-mse")  # fmt: skip
REGISTERED = [MAIN_FILE, MAIN_FOLDER, MAIN_XL, LORA, LORA_XL, LOHA, EMBEDDING, VAE_MSE]


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A folder the catalog scans: one SD1 diffusers layout (no weights needed to list it), the default model."""
    folder = tmp_path / "models" / "folder-only"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return tmp_path / "models"


@pytest.fixture
def registry(pool) -> PgModelRegistry:
    return PgModelRegistry(pool)


@pytest.fixture
def store(pool) -> PgPresetStore:
    return PgPresetStore(pool)


@pytest.fixture
async def filled(registry) -> PgModelRegistry:
    assert await registry.add_missing(REGISTERED) == len(REGISTERED)
    return registry


@pytest.fixture
def resolver(models_dir, filled, store) -> ModelResolver:
    return ModelResolver(catalog=DirectoryModelCatalog(models_dir, "folder-only"), registry=filled, presets=store)


# --- PresetService ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scheduler": "warp"}, "Unknown scheduler warp"),
        ({"config": {"sharpness": 3}}, "Not a default configuration key: sharpness"),
        ({"config": {"width": "wide"}}, "width"),
        ({"config": {"num_inference_steps": [1]}}, "num_inference_steps"),
    ],
)
async def test_create_refuses_what_no_invocation_could_use(store, changes, message):
    service = PresetService(store)
    with pytest.raises(InvalidRequest, match=message):
        await service.create(ModelPreset(name="p", checkpoint="x.ckpt", **changes))
    assert await service.all() == []


async def test_unregistered_files_are_stored(store):
    # Enfugue stores presets for checkpoints that are not downloaded yet; so does this server.
    service = PresetService(store)
    preset = ModelPreset(name="later", checkpoint="not-yet.safetensors", lora=[WeightedModel(model="nope.pt")])
    assert await service.create(preset) == preset


async def test_listings_come_from_the_registry(filled, store):
    service = PresetService(store, registry=filled)
    await service.create(ModelPreset(name="My Preset", checkpoint="realistic.safetensors"))
    assert await service.checkpoints() == ["demo-sd15", "realistic.safetensors", "sd_xl_base_1.0.safetensors"]
    assert await service.loras() == ["detail.safetensors", "xl-style.safetensors"]
    assert await service.lycoris() == ["hada.safetensors"]
    assert await service.inversions() == ["easyneg.pt"]
    assert await service.model_options() == [
        {"type": "checkpoint", "name": "realistic.safetensors"},
        {"type": "checkpoint", "name": "sd_xl_base_1.0.safetensors"},
        {"type": "model", "name": "My Preset"},
    ]


async def test_listings_without_a_registry_are_empty(store):
    service = PresetService(store)
    assert (await service.checkpoints(), await service.loras(), await service.inversions()) == ([], [], [])


async def test_status_of_each_part(filled, store):
    service = PresetService(store, registry=filled)
    await service.create(ModelPreset(name="p", checkpoint="realistic", refiner="sd_xl_refiner_1.0.safetensors"))
    assert await service.status("p") == {
        "model": {"supported": True, "xl": False, "ready": True},
        "refiner": {"supported": False, "xl": True, "ready": False},
        "inpainter": None,
        "tensorrt": {
            "base": {"supported": False, "xl": False, "ready": False},
            "inpainter": None,
            "refiner": {"supported": False, "xl": True, "ready": False},
        },
    }
    await service.replace("p", ModelPreset(name="p", checkpoint="sd_xl_base_1.0.safetensors"))
    assert (await service.status("p"))["model"] == {"supported": True, "xl": True, "ready": True}
    # Once installed, the refiner is a part this server runs (its base is no base model, but a refiner's).
    refiner = record("sd_xl_refiner_1.0.safetensors", ModelType.MAIN, ModelFamily.SDXL_REFINER,
                     f"{ROOT}/sd_xl_refiner_1.0.safetensors")  # fmt: skip
    await filled.add_missing([refiner])
    await service.replace("p", ModelPreset(name="p", checkpoint="realistic", refiner="sd_xl_refiner_1.0.safetensors",
                                           inpainter="sd_xl_refiner_1.0.safetensors"))  # fmt: skip
    status = await service.status("p")
    assert status["refiner"] == {"supported": True, "xl": True, "ready": True}
    assert status["inpainter"] == {"supported": False, "xl": True, "ready": True}


# --- name matching -----------------------------------------------------------------------------------------------


def test_exact_name_beats_file_name_beats_stem():
    items = [("a.safetensors", "/m/x/a-file.safetensors"), ("b", "/m/a.safetensors"), ("a", "/m/c")]
    names = lambda item: item  # noqa: E731
    assert best_matches(items, "a.safetensors", names) == [items[0]]
    assert best_matches(items[1:], "a.safetensors", names) == [items[1]]
    assert best_matches(items[2:], "a.safetensors", names) == [items[2]]
    assert best_matches(items, "a-file", names) == [items[0]]
    assert best_matches(items, "zzz", names) == []


# --- ModelResolver -----------------------------------------------------------------------------------------------


async def test_no_model_is_the_default_and_sizes_steps_guidance_are_filled(resolver):
    resolution = await resolver.resolve(GenerationRequest(prompt="a cat"))
    assert resolution.main.spec.name == "folder-only"
    assert resolution.main.hash == ""  # only in the models folder: not registered yet
    request = resolution.request
    assert (request.model, request.model_type, request.width, request.height) == ("folder-only", "checkpoint", 512, 512)
    assert (request.steps, request.guidance_scale) == (40, 7.5)


@pytest.mark.parametrize("name", ["realistic", "realistic.safetensors", f"{ROOT}/sd-1/main/realistic.safetensors"])
async def test_a_checkpoint_by_name_file_name_or_registered_path(resolver, name):
    resolution = await resolver.resolve(GenerationRequest(model=name, model_type="checkpoint"))
    assert resolution.main.spec.key == MAIN_FILE.key
    assert resolution.main.hash == MAIN_FILE.hash
    assert resolution.request.model == "realistic"


@pytest.mark.parametrize("name", ["missing.safetensors", "/etc/passwd", "../demo-sd15"])
async def test_an_unknown_checkpoint_is_400(resolver, name):
    with pytest.raises(InvalidRequest, match="Cannot find or access"):
        await resolver.resolve(GenerationRequest(model=name, model_type="checkpoint"))


async def test_model_type_is_inferred_and_a_main_model_name_works_without_a_preset(resolver):
    assert (await resolver.resolve(GenerationRequest(model="sd_xl_base_1.0.safetensors"))).main.spec.key == MAIN_XL.key
    resolution = await resolver.resolve(GenerationRequest(model="demo-sd15"))
    assert resolution.main.spec.key == MAIN_FOLDER.key
    with pytest.raises(ModelNotFound, match="Unknown diffusion model nothing"):
        await resolver.resolve(GenerationRequest(model="nothing"))


async def test_a_preset_applies_its_models_and_defaults_and_the_request_wins_where_enfugue_lets_it(resolver, store):
    await store.create(
        ModelPreset(
            name="Detailed",
            checkpoint="realistic.safetensors",
            size=256,
            prompt="RAW photo",
            negative_prompt="blurry",
            scheduler="ddim",
            vae="mse",
            lora=[WeightedModel(model="detail.safetensors", weight=0.7)],
            lycoris=[WeightedModel(model="hada", weight=0.2)],
            inversion=["easyneg.pt"],
            config={"height": 320, "num_inference_steps": 12, "guidance_scale": 4.0, "upscale": ["esrgan"]},
        )
    )
    request = GenerationRequest(
        model="Detailed", prompt="a cat", negative_prompt="easyneg, ugly", steps=5, scheduler="eds", size=64,
        lora=[WeightedModel(model="xl-style")], vae="something-else",
    )  # fmt: skip
    resolution = await resolver.resolve(request)
    assert resolution.main.spec.key == MAIN_FILE.key
    # The preset's LoRAs, LyCORIS, VAE and size replace the request's (Enfugue pops those keys) ...
    assert [(lora.spec.key, lora.weight) for lora in resolution.loras] == [(LORA.key, 0.7), (LOHA.key, 0.2)]
    assert resolution.vae is not None and resolution.vae.spec.key == VAE_MSE.key
    assert [embedding.spec.key for embedding in resolution.embeddings] == [EMBEDDING.key]
    resolved = resolution.request
    assert (resolved.width, resolved.height) == (256, 320)  # size → width; config height
    # ... while request values win over its scheduler and default configuration.
    assert (resolved.steps, resolved.guidance_scale, resolved.scheduler) == (5, 4.0, "eds")
    assert resolved.prompt == "a cat, RAW photo"
    assert resolved.negative_prompt == "<easyneg>, ugly, blurry"
    assert (resolved.model, resolved.model_type, resolved.model_prompt) == ("realistic", "checkpoint", None)


async def test_canvas_regions_get_the_model_prompts_and_embeddings_too(resolver, store):
    await store.create(ModelPreset(name="Detailed", checkpoint="realistic.safetensors", prompt="RAW photo",
                                   negative_prompt="blurry", inversion=["easyneg.pt"]))  # fmt: skip
    regions = [RegionNode(w=64, h=64, prompt="a dog", negative_prompt="EasyNeg"),
               RegionNode(x=64, w=64, h=64, image="in.png", prompt="a cat")]  # fmt: skip
    resolved = (await resolver.resolve(GenerationRequest(model="Detailed", prompt="park", nodes=regions))).request
    # A prompt-only region is all its own prompt, so the model prompts join it; an image region is joined with the
    # global prompt later (services/enfugue_regions.py), which has them already.
    assert [(node.prompt, node.negative_prompt) for node in resolved.nodes] == [
        ("a dog, RAW photo", "<easyneg>, blurry"),
        ("a cat", ""),
    ]
    # The embedding no prompt named rides on the global prompt only.
    assert resolved.prompt == "park, RAW photo, <easyneg>"


async def test_a_preset_whose_checkpoint_is_gone_is_400_naming_it(resolver, store):
    await store.create(ModelPreset(name="Old", checkpoint="deleted.ckpt"))
    with pytest.raises(InvalidRequest, match=r"Cannot find or access deleted.ckpt \(the checkpoint of model Old\)"):
        await resolver.resolve(GenerationRequest(model="Old"))


async def test_a_preset_with_unusable_defaults_is_400(resolver, store):
    # Written around the service's checks (as a preset stored by an older server could be).
    await store.create(ModelPreset(name="Bad", checkpoint="realistic", config={"width": "wide"}))
    with pytest.raises(InvalidRequest, match="Model Bad has unusable defaults"):
        await resolver.resolve(GenerationRequest(model="Bad"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lora": [WeightedModel(model="nope.safetensors")]}, "Cannot find or access nope.safetensors"),
        ({"lora": [WeightedModel(model="xl-style")]},
         "LoRA xl-style is a sdxl model and cannot be used with realistic"),
        ({"lora": [WeightedModel(model="detail"), WeightedModel(model="detail.safetensors", weight=0.5)]},
         "listed more than once"),
        ({"lycoris": [WeightedModel(model="ghost")]}, "Cannot find or access ghost"),
        ({"inversion": ["nope.pt"]}, "Cannot find or access nope.pt"),
        ({"vae": "xl"}, r"Cannot find or access VAE xl \(stabilityai/sdxl-vae\): install stabilityai/sdxl-vae"),
        ({"vae": "no-vae"}, "Cannot find or access no-vae"),
    ],
)  # fmt: skip
async def test_unknown_or_unsuitable_models_are_400(resolver, changes, message):
    with pytest.raises(InvalidRequest, match=message):
        await resolver.resolve(GenerationRequest(model="realistic.safetensors", **changes))


async def test_a_main_model_of_a_base_the_graph_cannot_run_is_400(resolver, filled):
    await filled.add(record("flux-dev", ModelType.MAIN, ModelFamily.FLUX, f"{ROOT}/flux/main/flux-dev"))
    with pytest.raises(InvalidRequest, match="flux-dev is a flux model; this server generates with sd-1, sd-2, sdxl"):
        await resolver.resolve(GenerationRequest(model="flux-dev", model_type="checkpoint"))


async def test_vae_by_short_key_registry_name_or_repo_id(resolver):
    for name in ("mse", "sd-vae-ft-mse", "stabilityai/sd-vae-ft-mse"):
        resolution = await resolver.resolve(GenerationRequest(model="demo-sd15", vae=name))
        assert resolution.vae is not None and resolution.vae.spec.key == VAE_MSE.key, name


async def test_without_a_registry_the_catalog_resolves(models_dir):
    resolver = ModelResolver(catalog=DirectoryModelCatalog(models_dir, "folder-only"))
    assert (await resolver.resolve(GenerationRequest(model="folder-only"))).main.spec.name == "folder-only"
    with pytest.raises(InvalidRequest, match="Cannot find or access realistic.safetensors"):
        await resolver.resolve(GenerationRequest(model="realistic.safetensors"))
    with pytest.raises(InvalidRequest, match="Cannot find or access detail"):
        await resolver.resolve(GenerationRequest(model="folder-only", lora=[WeightedModel(model="detail")]))


def test_embeddings_are_written_as_activation_tokens():
    prompts = {"prompt": "a photo of EasyNegative art", "negative_prompt": "easyneg, blurry"}
    assert activate_embeddings(prompts, [("easyneg", "easyneg.pt")]) == {
        "prompt": "a photo of EasyNegative art",  # part of a longer word: left alone
        "negative_prompt": "<easyneg>, blurry",
    }
    # Named nowhere: appended to the prompt; already written as a token: left as is.
    assert activate_embeddings({"prompt": "a cat", "negative_prompt": ""}, [("sty", "sty.safetensors")]) == {
        "prompt": "a cat, <sty>",
        "negative_prompt": "",
    }
    assert activate_embeddings({"prompt": "<sty> sty", "negative_prompt": ""}, [("sty", "sty")])["prompt"] == (
        "<sty> sty"
    )


# --- the graph a resolution becomes -------------------------------------------------------------------------------


def test_sdxl_loras_chain_through_unet_clip_and_clip2_and_a_vae_decodes():
    main = GraphModel(MAIN_XL.spec(), MAIN_XL.hash)
    other = LORA_XL.model_copy(update={"key": "other-xl-lora", "name": "other"})
    loras = [GraphModel(LORA_XL.spec(), LORA_XL.hash, weight=0.5), GraphModel(other.spec(), "", weight=2.0)]
    vae = GraphModel(VAE_MSE.spec(), VAE_MSE.hash)
    request = GenerationRequest(model=MAIN_XL.name, width=64, height=64, num_images=2, seed=3)
    graph = txt2img_graph(request, main, loras=loras, vae=vae)
    nodes, edges = graph["nodes"], {(e["source"]["node_id"], e["source"]["field"], e["destination"]["node_id"],
                                     e["destination"]["field"]) for e in graph["edges"]}  # fmt: skip
    assert [nodes[f"lora_{i}"]["type"] for i in range(2)] == ["sdxl_lora_loader"] * 2
    assert nodes["lora_0"]["lora"]["hash"] == LORA_XL.hash
    assert (nodes["lora_1"]["lora"]["key"], nodes["lora_1"]["weight"]) == ("other-xl-lora", 2.0)
    for handle in ("unet", "clip", "clip2"):
        assert ("model", handle, "lora_0", handle) in edges
        assert ("lora_0", handle, "lora_1", handle) in edges
    assert {("lora_1", "clip", "positive", "clip"), ("lora_1", "clip2", "negative", "clip2")} <= edges
    for index in range(2):
        assert ("lora_1", "unet", f"denoise_{index}", "unet") in edges
        assert ("vae", "vae", f"output_{index}", "vae") in edges
        assert ("model", "vae", f"output_{index}", "vae") not in edges
    assert nodes["vae"]["vae_model"]["key"] == VAE_MSE.key
    assert [item["weight"] for item in nodes["metadata"]["loras"]] == [0.5, 2.0]


# --- A registry model's own default settings ---------------------------------------------------------------------


async def test_a_main_models_default_settings_fill_what_the_request_left_unset(resolver, filled):
    defaults = {"steps": 12, "cfg_scale": 3.5, "scheduler": "dpmpp_2m", "width": 640, "height": 448}
    await filled.update(MAIN_FILE.key, {"default_settings": defaults})

    plain = (await resolver.resolve(GenerationRequest(model="realistic", model_type="checkpoint"))).request
    assert (plain.steps, plain.guidance_scale, plain.scheduler, plain.width, plain.height) == (
        12, 3.5, "dpmsm", 640, 448,
    )  # fmt: skip
    explicit = GenerationRequest(model="realistic", model_type="checkpoint", steps=20, guidance_scale=9, size=512)
    given = (await resolver.resolve(explicit)).request
    assert (given.steps, given.guidance_scale, given.width, given.height) == (20, 9, 512, 512)
    # Another model's defaults are its own.
    other = (await resolver.resolve(GenerationRequest(model="demo-sd15"))).request
    assert (other.steps, other.guidance_scale, other.width) == (40, 7.5, 512)


async def test_a_main_models_default_vae_is_used_unless_the_request_names_one(resolver, filled):
    await filled.update(MAIN_FOLDER.key, {"default_settings": {"vae": VAE_MSE.key}})
    assert (await resolver.resolve(GenerationRequest(model="demo-sd15"))).vae.spec.key == VAE_MSE.key

    await filled.update(MAIN_FOLDER.key, {"default_settings": {"vae": "gone-key"}})
    with pytest.raises(InvalidRequest, match="default VAE gone-key"):
        await resolver.resolve(GenerationRequest(model="demo-sd15"))


async def test_a_lora_named_without_a_weight_takes_its_default_weight(resolver, filled):
    await filled.update(LORA.key, {"default_settings": {"weight": 0.4}})
    bare = await resolver.resolve(GenerationRequest(model="demo-sd15", lora=[WeightedModel(model="detail")]))
    weighted = await resolver.resolve(
        GenerationRequest(model="demo-sd15", lora=[WeightedModel(model="detail", weight=1.0)])
    )
    assert [lora.weight for lora in bare.loras] == [0.4]
    assert [lora.weight for lora in weighted.loras] == [1.0]
