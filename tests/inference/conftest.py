"""Tiny models built once per session, saved both as diffusers folders and as single-file checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.runner import GenerationRunner
from serve_app.inference.tiny import build_tiny_sd15, build_tiny_sdxl, save_diffusers, save_single_file

torch.set_num_threads(1)


@dataclass(frozen=True)
class TinyModels:
    root: Path
    sd15: ModelSpec
    sdxl: ModelSpec
    sd15_file: ModelSpec
    sdxl_file: ModelSpec


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    root = tmp_path_factory.mktemp("models")
    specs = {}
    for name, family, build in (
        ("sd15", ModelFamily.SD1, build_tiny_sd15),
        ("sdxl", ModelFamily.SDXL, build_tiny_sdxl),
    ):
        pipe = build()
        folder = save_diffusers(pipe, root / f"tiny-{name}")
        config = save_single_file(pipe, root / f"tiny-{name}-file.safetensors")
        specs[name] = ModelSpec(name=f"tiny-{name}", family=family, format=ModelFormat.DIFFUSERS, path=str(folder))
        specs[f"{name}_file"] = ModelSpec(
            name=f"tiny-{name}-file",
            family=family,
            format=ModelFormat.CHECKPOINT,
            path=str(root / f"tiny-{name}-file.safetensors"),
            config_path=str(config),
        )
    return TinyModels(root=root, **specs)


@pytest.fixture(scope="session")
def runner() -> GenerationRunner:
    return GenerationRunner(ModelCache(), device="cpu", dtype=torch.float32)
