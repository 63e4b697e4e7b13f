"""DirectoryModelCatalog: what the models folder holds, each entry recognised by probing its files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from serve_app.domain.errors import ModelNotFound
from serve_app.domain.models import ModelFamily, ModelFormat, ModelType
from serve_app.storage.model_catalog import DirectoryModelCatalog


def _diffusers(folder: Path, class_name: str, *, hidden_size: int | None = None, prediction: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, "_diffusers_version": "0.30.0"}))
    if hidden_size is not None:
        (folder / "text_encoder").mkdir()
        (folder / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": hidden_size}))
    if prediction is not None:
        (folder / "scheduler").mkdir()
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": prediction}))
    return folder


# Tensor names probing reads from a single-file checkpoint's header (the tensors themselves are never loaded).
SD1_CHECKPOINT = {"model.diffusion_model.input_blocks.0.0.weight": (4, 4, 1, 1), "cond_stage_model.transformer.w": (1,)}
SDXL_CHECKPOINT = {
    "model.diffusion_model.input_blocks.0.0.weight": (4, 4, 1, 1),
    "conditioner.embedders.0.transformer.w": (1,),
    "conditioner.embedders.1.model.w": (1,),
}


def _checkpoint(path: Path, keys: Mapping[str, tuple[int, ...]]) -> Path:
    """A single-file checkpoint with these tensors (zeros): safetensors, or a torch zip pickle for `.ckpt`."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: torch.zeros(shape) for name, shape in keys.items()}
    if path.suffix == ".ckpt":
        torch.save({"state_dict": state}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    return path


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    _diffusers(root / "demo-sd15", "StableDiffusionPipeline", hidden_size=768)
    _diffusers(root / "sd21-base", "StableDiffusionPipeline", hidden_size=1024)
    _diffusers(root / "sd21-v", "StableDiffusionPipeline", prediction="v_prediction")
    _diffusers(root / "juggernaut", "StableDiffusionXLPipeline")
    _checkpoint(root / "sd_xl_base.safetensors", SDXL_CHECKPOINT)
    _checkpoint(root / "dreamshaper.ckpt", SD1_CHECKPOINT)
    # Named like nothing in particular: its tensors say SDXL; its config folder is what loads it offline.
    _checkpoint(root / "mystery.safetensors", SDXL_CHECKPOINT)
    _diffusers(root / "mystery.config", "StableDiffusionXLPipeline")
    # An empty file named like a checkpoint is not a model.
    (root / "placeholder.safetensors").touch()
    # Neither models nor noise in the listing.
    _diffusers(root / ".tmp-download", "StableDiffusionPipeline")
    _diffusers(root / ".hidden", "StableDiffusionPipeline")
    (root / "notes.txt").write_text("not a model")
    (root / "empty-folder").mkdir()
    _diffusers(root / "flux", "FluxPipeline")
    (root / "broken").mkdir()
    (root / "broken" / "model_index.json").write_text("{not json")
    return root


def test_lists_models_sorted_with_family_and_format(models_dir: Path) -> None:
    specs = {spec.name: spec for spec in DirectoryModelCatalog(models_dir, "demo-sd15").list()}
    assert list(specs) == sorted(specs)
    assert {name: (spec.family, spec.format) for name, spec in specs.items()} == {
        "demo-sd15": (ModelFamily.SD1, ModelFormat.DIFFUSERS),
        "dreamshaper.ckpt": (ModelFamily.SD1, ModelFormat.CHECKPOINT),
        # Listed as what it is; running it fails with "not supported" (as InvokeAI lists models it cannot run).
        "flux": (ModelFamily.FLUX, ModelFormat.DIFFUSERS),
        "juggernaut": (ModelFamily.SDXL, ModelFormat.DIFFUSERS),
        "mystery.safetensors": (ModelFamily.SDXL, ModelFormat.CHECKPOINT),
        "sd21-base": (ModelFamily.SD2, ModelFormat.DIFFUSERS),
        "sd21-v": (ModelFamily.SD2, ModelFormat.DIFFUSERS),
        "sd_xl_base.safetensors": (ModelFamily.SDXL, ModelFormat.CHECKPOINT),
    }


def test_paths_and_config_paths(models_dir: Path) -> None:
    catalog = DirectoryModelCatalog(models_dir, "demo-sd15")
    diffusers = catalog.resolve("juggernaut")
    assert (diffusers.path, diffusers.config_path) == (str(models_dir / "juggernaut"), None)
    with_config = catalog.resolve("mystery.safetensors")
    assert with_config.path == str(models_dir / "mystery.safetensors")
    assert with_config.config_path == str(models_dir / "mystery.config")
    assert catalog.resolve("sd_xl_base.safetensors").config_path is None


def test_checkpoints_resolve_by_stem(models_dir: Path) -> None:
    catalog = DirectoryModelCatalog(models_dir, "demo-sd15")
    assert catalog.resolve("sd_xl_base").name == "sd_xl_base.safetensors"
    assert catalog.resolve("dreamshaper").name == "dreamshaper.ckpt"


def test_stem_alias_prefers_safetensors_and_never_shadows_a_real_name(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "m.ckpt", SD1_CHECKPOINT)
    _checkpoint(tmp_path / "m.safetensors", SD1_CHECKPOINT)
    _diffusers(tmp_path / "d", "StableDiffusionPipeline")
    _checkpoint(tmp_path / "d.safetensors", SD1_CHECKPOINT)
    catalog = DirectoryModelCatalog(tmp_path, "m")
    assert catalog.resolve("m").name == "m.safetensors"
    assert catalog.resolve("d").format is ModelFormat.DIFFUSERS


def test_default_model(models_dir: Path) -> None:
    assert DirectoryModelCatalog(models_dir, "demo-sd15").resolve(None).name == "demo-sd15"
    assert DirectoryModelCatalog(models_dir, "sd_xl_base").resolve(None).name == "sd_xl_base.safetensors"
    with pytest.raises(ModelNotFound):
        DirectoryModelCatalog(models_dir, "gone").resolve(None)


@pytest.mark.parametrize(
    "name", ["nope", "broken", "empty-folder", ".tmp-download", ".hidden", "notes.txt", "placeholder.safetensors"]
)
def test_unknown_or_skipped_names(models_dir: Path, name: str) -> None:
    with pytest.raises(ModelNotFound) as info:
        DirectoryModelCatalog(models_dir, "demo-sd15").resolve(name)
    assert info.value.name == name


@pytest.mark.parametrize("name", ["../models/demo-sd15", "demo-sd15/..", "a/b", "a\\b", "..", ".", "", "x\x00"])
def test_traversal_names_are_rejected(models_dir: Path, name: str) -> None:
    with pytest.raises(ModelNotFound):
        DirectoryModelCatalog(models_dir, "demo-sd15").resolve(name)


def test_rescans_when_a_name_is_missing_but_caches_otherwise(models_dir: Path) -> None:
    catalog = DirectoryModelCatalog(models_dir, "demo-sd15")
    assert "late" not in {spec.name for spec in catalog.list()}
    _diffusers(models_dir / "late", "StableDiffusionXLPipeline")
    # list() serves the cached scan; resolving the new name triggers a rescan.
    assert "late" not in {spec.name for spec in catalog.list()}
    assert catalog.resolve("late").family is ModelFamily.SDXL
    assert "late" in {spec.name for spec in catalog.list()}


def test_missing_models_dir_is_empty(tmp_path: Path) -> None:
    catalog = DirectoryModelCatalog(tmp_path / "absent", "demo-sd15")
    assert catalog.list() == []
    with pytest.raises(ModelNotFound):
        catalog.resolve(None)


# LoRAs (loras/<name>.safetensors) and VAEs (vae/<name>/): built here from a few tiny tensors and a config.


def write_lora(path: Path, keys: Mapping[str, tuple[int, ...]]) -> Path:
    """A safetensors file with LoRA-style tensor names (zeros of the given shapes)."""
    import numpy as np
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: np.zeros(shape, dtype=np.float16) for name, shape in keys.items()}, str(path))
    return path


SD1_LORA_KEYS = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 32),
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (32, 4),
    "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 32),
}
SDXL_LORA_KEYS = {**SD1_LORA_KEYS, "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 32)}


def write_vae(folder: Path, *, scaling_factor: float = 0.18215, base: str | None = None) -> Path:
    """A diffusers AutoencoderKL folder (config and a small weights file), with an optional sidecar."""
    folder.mkdir(parents=True)
    config = {"_class_name": "AutoencoderKL", "latent_channels": 4, "scaling_factor": scaling_factor}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 100)
    if base is not None:
        (folder / "serve_app.json").write_text(json.dumps({"base": base}))
    return folder


@pytest.fixture
def addons_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    _diffusers(root / "demo-sd15", "StableDiffusionPipeline")
    write_lora(root / "loras" / "ink.safetensors", SD1_LORA_KEYS)
    write_lora(root / "loras" / "ink-xl.safetensors", SDXL_LORA_KEYS)
    # Only a cross-attention width to go by: 2048 is SDXL's.
    write_lora(root / "loras" / "wide.safetensors", {"unet.up.attn2.to_k.lora_A.weight": (4, 2048)})
    (root / "loras" / "garbage.safetensors").write_bytes(b"\xff" * 20)
    (root / "loras" / "readme.txt").write_text("not a LoRA")
    write_vae(root / "vae" / "plain")
    write_vae(root / "vae" / "xl-by-scale", scaling_factor=0.13025)
    write_vae(root / "vae" / "xl-by-sidecar", base="sdxl")
    (root / "vae" / "not-a-vae").mkdir()
    (root / "vae" / "not-a-vae" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    return root


def test_finds_loras_and_vaes_with_their_bases(addons_dir: Path) -> None:
    catalog = DirectoryModelCatalog(addons_dir, "demo-sd15")
    found = {(spec.name, spec.type): (spec.family, spec.format) for spec in catalog.list()}
    assert found == {
        ("demo-sd15", ModelType.MAIN): (ModelFamily.SD1, ModelFormat.DIFFUSERS),
        ("ink", ModelType.LORA): (ModelFamily.SD1, ModelFormat.LYCORIS),
        ("ink-xl", ModelType.LORA): (ModelFamily.SDXL, ModelFormat.LYCORIS),
        ("wide", ModelType.LORA): (ModelFamily.SDXL, ModelFormat.LYCORIS),
        ("plain", ModelType.VAE): (ModelFamily.SD1, ModelFormat.DIFFUSERS),
        ("xl-by-scale", ModelType.VAE): (ModelFamily.SDXL, ModelFormat.DIFFUSERS),
        ("xl-by-sidecar", ModelType.VAE): (ModelFamily.SDXL, ModelFormat.DIFFUSERS),
    }
    names = [spec.name for spec in catalog.list()]
    assert names == sorted(names)
    assert catalog.get(DirectoryModelCatalog(addons_dir, "x").resolve("demo-sd15").key).name == "demo-sd15"


def test_get_by_key_and_paths(addons_dir: Path) -> None:
    catalog = DirectoryModelCatalog(addons_dir, "demo-sd15")
    for spec in catalog.list():
        assert catalog.get(spec.key) == spec
    lora = next(spec for spec in catalog.list() if spec.name == "ink")
    assert lora.path == str(addons_dir / "loras" / "ink.safetensors")
    with pytest.raises(ModelNotFound):
        catalog.get("no-such-key")


def test_loras_and_vaes_are_not_resolved_as_main_models(addons_dir: Path) -> None:
    catalog = DirectoryModelCatalog(addons_dir, "demo-sd15")
    for name in ("ink", "plain", "loras", "vae"):
        with pytest.raises(ModelNotFound):
            catalog.resolve(name)


def test_get_rescans_for_an_unknown_key(addons_dir: Path) -> None:
    catalog = DirectoryModelCatalog(addons_dir, "demo-sd15")
    assert len(catalog.list()) == 7
    write_lora(addons_dir / "loras" / "late.safetensors", SD1_LORA_KEYS)
    late = DirectoryModelCatalog(addons_dir, "demo-sd15").list()
    key = next(spec.key for spec in late if spec.name == "late")
    assert catalog.get(key).type is ModelType.LORA


def test_lycoris_and_embeddings_folders_and_misplaced_files(tmp_path: Path) -> None:
    from tests.support.tiny_models import textual_inversion

    root = tmp_path / "models"
    write_lora(
        root / "lycoris" / "hada.safetensors", {"lora_unet_x.hada_w1_a": (4, 32), "lora_unet_x.hada_w1_b": (4, 32)}
    )
    textual_inversion(root / "embeddings", name="cat-toy", fmt="diffusers")
    # A LoRA dropped among the embeddings is not listed as one (nor as a LoRA: it is in the wrong folder).
    write_lora(root / "embeddings" / "stray.safetensors", SD1_LORA_KEYS)
    found = {(spec.name, spec.type, spec.format) for spec in DirectoryModelCatalog(root, "x").list()}
    assert found == {
        ("hada", ModelType.LORA, ModelFormat.LYCORIS),
        ("cat-toy", ModelType.EMBEDDING, ModelFormat.EMBEDDING_FILE),
    }
