"""Enfugue's refiner and inpainter: resolved against the real registry and preset store, and the graphs they make."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest, RegionNode
from serve_app.domain.models import ModelFamily, ModelFormat, ModelRecord, ModelType, ModelVariant, derived_key
from serve_app.domain.presets import ModelPreset
from serve_app.services.generation_graphs import GraphExtras, GraphModel, generation_graph
from serve_app.services.model_resolution import ModelResolver
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.model_registry import PgModelRegistry
from serve_app.storage.preset_repository import PgPresetStore

pytestmark = pytest.mark.timeout(60)

ROOT = "/models"


def record(name: str, type_: ModelType, base: ModelFamily, *, variant: ModelVariant | None = None) -> ModelRecord:
    return ModelRecord(key=derived_key(type_, name), hash=f"blake3:{name}", path=f"{ROOT}/{name}", file_size=1,
                       name=name, base=base, type=type_, format=ModelFormat.DIFFUSERS, source=f"{ROOT}/{name}",
                       variant=variant)  # fmt: skip


XL = record("xl-base", ModelType.MAIN, ModelFamily.SDXL)
XL_OTHER = record("xl-other", ModelType.MAIN, ModelFamily.SDXL)
REFINER = record("xl-refiner", ModelType.MAIN, ModelFamily.SDXL_REFINER)
REFINER_2 = record("xl-refiner-2", ModelType.MAIN, ModelFamily.SDXL_REFINER)
SD1 = record("sd1-base", ModelType.MAIN, ModelFamily.SD1)
SD1_INPAINT = record("sd1-inpaint", ModelType.MAIN, ModelFamily.SD1, variant=ModelVariant.INPAINT)
XL_VAE = record("xl-vae", ModelType.VAE, ModelFamily.SDXL)
SD1_VAE = record("sd1-vae", ModelType.VAE, ModelFamily.SD1)
REGISTERED = [XL, XL_OTHER, REFINER, REFINER_2, SD1, SD1_INPAINT, XL_VAE, SD1_VAE]


@pytest.fixture
async def registry(pool: Any) -> PgModelRegistry:
    registry = PgModelRegistry(pool)
    assert await registry.add_missing(REGISTERED) == len(REGISTERED)
    return registry


@pytest.fixture
def store(pool: Any) -> PgPresetStore:
    return PgPresetStore(pool)


@pytest.fixture
def resolver(tmp_path: Path, registry: PgModelRegistry, store: PgPresetStore) -> ModelResolver:
    folder = tmp_path / "models" / "folder-only"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return ModelResolver(catalog=DirectoryModelCatalog(tmp_path / "models", "folder-only"), registry=registry,
                         presets=store)  # fmt: skip


def keys(extras: GraphExtras) -> dict[str, str | None]:
    return {name: (model.spec.key if model is not None else None) for name, model in
            (("refiner", extras.refiner), ("refiner_vae", extras.refiner_vae), ("inpainter", extras.inpainter),
             ("inpainter_vae", extras.inpainter_vae))}  # fmt: skip


# --- resolution ------------------------------------------------------------------------------------------------


async def test_refiner_inpainter_and_their_vaes_resolve_by_name(resolver: ModelResolver) -> None:
    refined = await resolver.resolve(GenerationRequest(model="xl-base", refiner="xl-refiner", refiner_vae="xl-vae"))
    assert keys(refined.extras) == {"refiner": REFINER.key, "refiner_vae": XL_VAE.key, "inpainter": None,
                                    "inpainter_vae": None}  # fmt: skip
    # An SDXL base model can refine too (Enfugue allows any XL checkpoint as refiner).
    assert keys((await resolver.resolve(GenerationRequest(model="xl-base", refiner="xl-other"))).extras)["refiner"] \
        == XL_OTHER.key  # fmt: skip
    inpainting = await resolver.resolve(
        GenerationRequest(model="sd1-base", inpainter="sd1-inpaint", inpainter_vae="sd1-vae")
    )
    assert keys(inpainting.extras) == {"refiner": None, "refiner_vae": None, "inpainter": SD1_INPAINT.key,
                                       "inpainter_vae": SD1_VAE.key}  # fmt: skip
    plain = await resolver.resolve(GenerationRequest(model="xl-base"))
    assert set(keys(plain.extras).values()) == {None}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"model": "xl-base", "refiner": "nope"}, "refiner", "Cannot find or access nope"),
        ({"model": "xl-base", "refiner": "sd1-base"}, "refiner", "must be an SDXL refiner or SDXL model"),
        ({"model": "sd1-base", "refiner": "xl-refiner"}, "refiner", "cannot be used with sd1-base"),
        ({"model": "xl-base", "inpainter": "nope"}, "inpainter", "Cannot find or access nope"),
        ({"model": "xl-base", "inpainter": "sd1-inpaint"}, "inpainter", "cannot be used with xl-base"),
        ({"model": "xl-base", "refiner": "xl-refiner", "refiner_vae": "sd1-vae"}, "vae", "cannot be used with"),
        ({"model": "sd1-base", "inpainter": "sd1-inpaint", "inpainter_vae": "xl-vae"}, "vae", "cannot be used"),
    ],
)
async def test_unusable_refiners_and_inpainters_are_400(
    resolver: ModelResolver, changes: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as caught:
        await resolver.resolve(GenerationRequest(**changes))
    assert caught.value.field == field


async def test_a_presets_refiner_replaces_the_requests_and_its_defaults_fill_what_is_unset(
    resolver: ModelResolver, store: PgPresetStore
) -> None:
    config = {"refiner_denoising_strength": 0.45, "refiner_guidance_scale": 3.0, "refiner_aesthetic_score": 7.0,
              "refiner_negative_aesthetic_score": 1.5}  # fmt: skip
    await store.create(ModelPreset(name="Refined", checkpoint="xl-base", refiner="xl-refiner", refiner_size=1024,
                                   refiner_vae="xl-vae", config=config))  # fmt: skip
    await store.create(ModelPreset(name="Bare", checkpoint="xl-base"))

    resolution = await resolver.resolve(GenerationRequest(model="Refined", refiner="xl-refiner-2", inpainter="x"))
    assert keys(resolution.extras)["refiner"] == REFINER.key  # the preset's, not the request's
    assert keys(resolution.extras)["refiner_vae"] == XL_VAE.key
    resolved = resolution.request
    assert (resolved.refiner, resolved.refiner_size, resolved.inpainter) == ("xl-refiner", 1024, None)
    assert (resolved.refiner_strength, resolved.refiner_guidance_scale, resolved.refiner_aesthetic_score,
            resolved.refiner_negative_aesthetic_score) == (0.45, 3.0, 7.0, 1.5)  # fmt: skip

    given = await resolver.resolve(GenerationRequest(model="Refined", refiner_strength=0.2, refiner_guidance_scale=9))
    assert (given.request.refiner_strength, given.request.refiner_guidance_scale) == (0.2, 9.0)
    assert given.request.refiner_aesthetic_score == 7.0
    # A preset without a refiner pops the request's too.
    bare = await resolver.resolve(GenerationRequest(model="Bare", refiner="xl-refiner"))
    assert bare.extras.refiner is None and bare.request.refiner is None


# --- graphs ----------------------------------------------------------------------------------------------------


def _graph(request: GenerationRequest, main: ModelRecord, extras: GraphExtras) -> dict[str, Any]:
    return generation_graph(request, GraphModel(main.spec(), main.hash), extras=extras)


def _sources(graph: dict[str, Any], node_id: str, field: str) -> list[str]:
    return [e["source"]["node_id"] for e in graph["edges"]
            if e["destination"] == {"node_id": node_id, "field": field}]  # fmt: skip


def _xl(**fields: Any) -> GenerationRequest:
    return GenerationRequest(model="xl-base", prompt="a cat", negative_prompt="blurry", width=64, height=64,
                             steps=10, seed=3, num_images=2, **fields)  # fmt: skip


def test_a_refiner_takes_the_end_of_each_samples_schedule() -> None:
    extras = GraphExtras(refiner=GraphModel(REFINER.spec(), REFINER.hash))
    graph = _graph(_xl(refiner="xl-refiner", refiner_strength=0.25, refiner_aesthetic_score=6.5,
                       refiner_prompt="sharp", refiner_guidance_scale=4.0), XL, extras)  # fmt: skip
    nodes = graph["nodes"]

    assert nodes["refiner"]["type"] == "sdxl_refiner_model_loader"
    assert nodes["refiner_positive"]["style"] == "sharp" and nodes["refiner_positive"]["aesthetic_score"] == 6.5
    assert nodes["refiner_negative"]["style"] == "blurry" and nodes["refiner_negative"]["aesthetic_score"] == 2.5
    for index in range(2):
        base, refine = nodes[f"denoise_{index}"], nodes[f"refiner_denoise_{index}"]
        assert (base["denoising_start"], base["denoising_end"]) == (0.0, 0.75)
        assert (refine["denoising_start"], refine["denoising_end"], refine["steps"]) == (0.75, 1.0, 10)
        assert refine["cfg_scale"] == 4.0
        assert _sources(graph, refine["id"], "latents") == [f"denoise_{index}"]
        assert _sources(graph, refine["id"], "unet") == ["refiner"]
        assert _sources(graph, f"output_{index}", "latents") == [refine["id"]]
        assert _sources(graph, f"output_{index}", "vae") == ["refiner"]  # the refiner's own VAE decodes
    metadata = nodes["metadata"]
    assert metadata["refiner_model"]["key"] == REFINER.key and metadata["refiner_start"] == 0.75
    assert (metadata["refiner_positive_aesthetic_score"], metadata["refiner_cfg_scale"]) == (6.5, 4.0)


def test_refiner_vae_and_an_sdxl_refiner_use_their_own_nodes() -> None:
    extras = GraphExtras(refiner=GraphModel(XL_OTHER.spec()), refiner_vae=GraphModel(XL_VAE.spec()))
    graph = _graph(_xl(refiner="xl-other"), XL, extras)
    nodes = graph["nodes"]
    assert nodes["refiner"]["type"] == "sdxl_model_loader"
    assert nodes["refiner_positive"]["type"] == "sdxl_compel_prompt"
    assert _sources(graph, "refiner_positive", "clip") == ["refiner"]
    assert nodes["refiner_vae"]["vae_model"]["key"] == XL_VAE.key
    assert _sources(graph, "output_0", "vae") == ["refiner_vae"]


def test_refiner_strength_zero_or_no_refiner_adds_nothing() -> None:
    extras = GraphExtras(refiner=GraphModel(REFINER.spec()))
    without = _graph(_xl(), XL, GraphExtras())
    zero = _graph(_xl(refiner="xl-refiner", refiner_strength=0.0), XL, extras)
    assert set(zero["nodes"]) == set(without["nodes"])
    assert zero["edges"] == without["edges"]
    assert zero["nodes"]["metadata"].get("refiner_model") is None


def test_an_inpainter_runs_the_inpaint_and_its_vae_encodes_and_decodes() -> None:
    extras = GraphExtras(inpainter=GraphModel(SD1_INPAINT.spec()), inpainter_vae=GraphModel(SD1_VAE.spec()))
    request = GenerationRequest(model="sd1-base", width=64, height=64, steps=4, seed=1, image="in.png",
                                mask="mask.png", inpainter="sd1-inpaint", inpainter_vae="sd1-vae")  # fmt: skip
    graph = _graph(request, SD1, extras)
    nodes = graph["nodes"]
    assert nodes["inpainter"]["type"] == "main_model_loader" and nodes["inpainter"]["model"]["key"] == SD1_INPAINT.key
    assert _sources(graph, "denoise_0", "unet") == ["inpainter"]
    for consumer in ("input", "mask", "decoded_0"):
        assert _sources(graph, consumer, "vae") == ["inpainter_vae"]
    # The prompts stay the main model's.
    assert _sources(graph, "positive", "clip") == ["model"]

    no_mask = _graph(request.model_copy(update={"mask": None}), SD1, extras)
    assert "inpainter" not in no_mask["nodes"] and _sources(no_mask, "denoise_0", "unet") == ["model"]


# --- canvas regions ----------------------------------------------------------------------------------------------


def _regions(nodes: list[RegionNode], main: ModelRecord = XL, **fields: Any) -> GenerationRequest:
    return GenerationRequest(model=main.name, width=64, height=64, steps=10, seed=3, nodes=nodes, **fields)


def test_each_region_gets_the_refiner_with_its_own_overrides_prompts_and_size() -> None:
    extras = GraphExtras(refiner=GraphModel(REFINER.spec(), REFINER.hash))
    left = RegionNode(x=0, y=0, w=32, h=64, prompt="a barn", negative_prompt="dark")
    right = RegionNode(x=32, y=0, w=32, h=64, prompt="the sea", refiner_strength=0.5, refiner_guidance_scale=2.0,
                       refiner_aesthetic_score=9.0)  # fmt: skip
    off = RegionNode(x=0, y=0, w=16, h=16, prompt="a bird", refiner_strength=0.0)
    graph = _graph(_regions([left, right, off], refiner="xl-refiner", refiner_strength=0.25, num_images=2), XL,
                   extras)  # fmt: skip
    nodes = graph["nodes"]

    for index in range(2):
        # The request's settings where the region sets none.
        base, refine = nodes[f"region_0_{index}_denoise"], nodes[f"refiner_region_0_{index}_denoise"]
        assert (base["denoising_start"], base["denoising_end"]) == (0.0, 0.75)
        assert (refine["denoising_start"], refine["denoising_end"], refine["cfg_scale"]) == (0.75, 1.0, 5.0)
        assert _sources(graph, refine["id"], "latents") == [f"region_0_{index}_denoise"]
        assert _sources(graph, refine["id"], "unet") == ["refiner"]
        assert _sources(graph, refine["id"], "positive_conditioning") == ["region_0_refiner_positive"]
        assert _sources(graph, f"region_0_{index}_decoded", "latents") == [refine["id"]]
        assert _sources(graph, f"region_0_{index}_decoded", "vae") == ["refiner"]
        # The region's own.
        base, refine = nodes[f"region_1_{index}_denoise"], nodes[f"refiner_region_1_{index}_denoise"]
        assert (base["denoising_end"], refine["denoising_start"], refine["cfg_scale"]) == (0.5, 0.5, 2.0)
        # Strength 0 on a region: its step is untouched, decoded by the main model.
        assert f"refiner_region_2_{index}_denoise" not in nodes
        assert nodes[f"region_2_{index}_denoise"]["denoising_end"] == 1.0
        assert _sources(graph, f"region_2_{index}_decoded", "latents") == [f"region_2_{index}_denoise"]
        assert _sources(graph, f"region_2_{index}_decoded", "vae") == ["model"]
    # One pair of refiner prompts per refined region: its prompts, its scores, its size.
    assert (nodes["region_0_refiner_positive"]["style"], nodes["region_0_refiner_negative"]["style"]) == \
        ("a barn", "dark")  # fmt: skip
    assert (nodes["region_0_refiner_positive"]["aesthetic_score"], nodes["region_1_refiner_positive"]
            ["aesthetic_score"], nodes["region_1_refiner_negative"]["aesthetic_score"]) == (6.0, 9.0, 2.5)  # fmt: skip
    assert nodes["region_1_refiner_positive"]["style"] == "the sea"
    assert (nodes["region_0_refiner_positive"]["original_width"], nodes["region_0_refiner_positive"]
            ["original_height"]) == (32, 64)  # fmt: skip
    assert "region_2_refiner_positive" not in nodes
    assert nodes["metadata"]["refiner_model"]["key"] == REFINER.key


def test_the_final_outpaint_and_a_gap_fill_are_refined_and_the_requests_refiner_prompt_wins() -> None:
    extras = GraphExtras(refiner=GraphModel(XL_OTHER.spec()), refiner_vae=GraphModel(XL_VAE.spec()))
    gaps = RegionNode(x=0, y=0, w=32, h=32, prompt="a boat", image="i.png", mask="m.png", infer=True,
                      refiner_strength=0.4)  # fmt: skip
    request = _regions([gaps], refiner="xl-other", prompt="a harbour", refiner_prompt="sharp")
    graph = _graph(request, XL, extras)
    nodes = graph["nodes"]
    # The gap fill and the img2img after it, both with the region's strength (an img2img starting later than the
    # refiner leaves the rest to the refiner).
    assert nodes["region_0_0_gaps_denoise"]["denoising_end"] == pytest.approx(0.6)
    assert nodes["region_0_0_denoise"]["denoising_start"] == pytest.approx(0.2)
    assert nodes["refiner_region_0_0_gaps_denoise"]["denoising_start"] == pytest.approx(0.6)
    for decoded in ("region_0_0_gaps_decoded", "region_0_0_decoded", "outpaint_0_decoded"):
        assert _sources(graph, decoded, "vae") == ["refiner_vae"]
    # The re-encoded gap fill and the outpaint's inputs stay on the main VAE (the same latent space).
    assert _sources(graph, "region_0_0_gaps_latents", "vae") == ["model"]
    assert _sources(graph, "outpaint_0_latents", "vae") == ["model"]
    # The outpaint: the request's strength (0.3), at the canvas size; an SDXL base refiner encodes with its CLIPs.
    assert nodes["outpaint_0_denoise"]["denoising_end"] == pytest.approx(0.7)
    assert _sources(graph, "refiner_outpaint_0_denoise", "positive_conditioning") == ["outpaint_refiner_positive"]
    outpaint_prompt = nodes["outpaint_refiner_positive"]
    assert (outpaint_prompt["prompt"], outpaint_prompt["target_width"]) == ("sharp", 64)
    assert nodes["outpaint_refiner_negative"]["prompt"] == ""
    assert nodes["region_0_refiner_positive"]["prompt"] == "sharp"
    assert nodes["region_0_refiner_positive"]["target_width"] == 32


def test_inpaint_regions_and_the_outpaint_run_on_the_inpainter_and_other_regions_do_not() -> None:
    extras = GraphExtras(inpainter=GraphModel(SD1_INPAINT.spec()), inpainter_vae=GraphModel(SD1_VAE.spec()))
    inpaint = RegionNode(x=0, y=0, w=32, h=64, image="i.png", mask="m.png", inpaint=True)
    prompt = RegionNode(x=32, y=0, w=32, h=32, prompt="the sea")
    graph = _graph(_regions([inpaint, prompt], SD1, inpainter="sd1-inpaint", prompt="a harbour"), SD1, extras)
    nodes = graph["nodes"]
    assert nodes["inpainter"]["model"]["key"] == SD1_INPAINT.key
    for denoise in ("region_0_0_denoise", "outpaint_0_denoise"):
        assert _sources(graph, denoise, "unet") == ["inpainter"]
    for consumer in ("region_0_latents", "region_0_denoise_mask", "region_0_0_decoded", "outpaint_0_latents",
                     "outpaint_0_mask", "outpaint_0_decoded"):  # fmt: skip
        assert _sources(graph, consumer, "vae") == ["inpainter_vae"], consumer
    assert _sources(graph, "region_1_0_denoise", "unet") == ["model"]
    assert _sources(graph, "region_1_0_decoded", "vae") == ["model"]
    # The prompts stay the main model's.
    assert _sources(graph, "region_0_positive", "clip") == ["model"]

    without = _graph(_regions([prompt], SD1, inpainter="sd1-inpaint"), SD1, extras)
    assert "inpainter" not in without["nodes"]
    # An img2img region with gaps: the gap fill is an inpaint, the img2img from the filled image is not.
    gaps = RegionNode(x=0, y=0, w=64, h=64, image="i.png", mask="m.png", infer=True)
    filled = _graph(_regions([gaps], SD1, inpainter="sd1-inpaint"), SD1, extras)
    assert _sources(filled, "region_0_0_gaps_denoise", "unet") == ["inpainter"]
    assert _sources(filled, "region_0_0_gaps_decoded", "vae") == ["inpainter_vae"]
    assert _sources(filled, "region_0_0_denoise", "unet") == ["model"]
    for consumer in ("region_0_0_gaps_latents", "region_0_0_decoded"):
        assert _sources(filled, consumer, "vae") == ["model"], consumer


def test_region_refiner_strength_zero_everywhere_or_no_refiner_adds_nothing() -> None:
    regions = [RegionNode(x=0, y=0, w=32, h=64, prompt="a barn", refiner_strength=0.0),
               RegionNode(x=32, y=0, w=32, h=64, prompt="the sea")]  # fmt: skip
    without = _graph(_regions(regions, prompt="x"), XL, GraphExtras())
    zero = _graph(_regions(regions, prompt="x", refiner="xl-refiner", refiner_strength=0.0), XL,
                  GraphExtras(refiner=GraphModel(REFINER.spec())))  # fmt: skip
    # The same graph (the metadata records the request, its refiner name included).
    assert {k: v for k, v in zero["nodes"].items() if k != "metadata"} == \
        {k: v for k, v in without["nodes"].items() if k != "metadata"}  # fmt: skip
    assert zero["edges"] == without["edges"]
    assert zero["nodes"]["metadata"].get("refiner_model") is None
