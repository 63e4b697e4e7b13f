"""DirectoryModelCatalog: diffusers folders and checkpoints found by scanning plain files and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve_app.domain.errors import ModelNotFound
from serve_app.domain.models import ModelFamily, ModelFormat
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


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    _diffusers(root / "demo-sd15", "StableDiffusionPipeline", hidden_size=768)
    _diffusers(root / "sd21-base", "StableDiffusionPipeline", hidden_size=1024)
    _diffusers(root / "sd21-v", "StableDiffusionPipeline", prediction="v_prediction")
    _diffusers(root / "juggernaut", "StableDiffusionXLPipeline")
    (root / "sd_xl_base.safetensors").touch()
    (root / "dreamshaper.ckpt").touch()
    # Named like SD1.5 but its config folder says SDXL: the config wins over the name.
    (root / "mystery.safetensors").touch()
    _diffusers(root / "mystery.config", "StableDiffusionXLPipeline")
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
    (tmp_path / "m.ckpt").touch()
    (tmp_path / "m.safetensors").touch()
    _diffusers(tmp_path / "d", "StableDiffusionPipeline")
    (tmp_path / "d.safetensors").touch()
    catalog = DirectoryModelCatalog(tmp_path, "m")
    assert catalog.resolve("m").name == "m.safetensors"
    assert catalog.resolve("d").format is ModelFormat.DIFFUSERS


def test_default_model(models_dir: Path) -> None:
    assert DirectoryModelCatalog(models_dir, "demo-sd15").resolve(None).name == "demo-sd15"
    assert DirectoryModelCatalog(models_dir, "sd_xl_base").resolve(None).name == "sd_xl_base.safetensors"
    with pytest.raises(ModelNotFound):
        DirectoryModelCatalog(models_dir, "gone").resolve(None)


@pytest.mark.parametrize("name", ["nope", "flux", "broken", "empty-folder", ".tmp-download", ".hidden", "notes.txt"])
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
