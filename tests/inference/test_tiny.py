"""Tiny models: real geometry, reproducible builds, single-file checkpoints and the demo models."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.inference import demo
from serve_app.inference.loading import load_pipeline
from serve_app.inference.runner import GenerationRunner
from serve_app.inference.tiny import DEMO_MODELS, build_tiny_sd15, build_tiny_sdxl, ensure_demo_models
from tests.inference.conftest import TinyModels
from tests.inference.support import request


def _weights(pipe: object) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": tensor
        for name, module in pipe.components.items()  # type: ignore[attr-defined]
        if isinstance(module, torch.nn.Module)
        for key, tensor in module.state_dict().items()
    }


def test_sd15_has_sd15_geometry() -> None:
    pipe = build_tiny_sd15()

    assert pipe.vae_scale_factor == 8
    assert pipe.vae.config.latent_channels == pipe.unet.config.in_channels == 4
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert (pipe.scheduler.config.beta_start, pipe.scheduler.config.beta_end) == (0.00085, 0.012)
    assert pipe.scheduler.config.steps_offset == 1
    assert pipe.safety_checker is None
    assert pipe.tokenizer.model_max_length == pipe.text_encoder.config.max_position_embeddings == 77
    assert sum(t.numel() for t in _weights(pipe).values()) < 3_000_000


def test_sdxl_has_sdxl_wiring() -> None:
    pipe = build_tiny_sdxl()
    unet = pipe.unet.config

    assert pipe.vae_scale_factor == 8
    assert unet.addition_embed_type == "text_time"
    assert unet.cross_attention_dim == pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert unet.projection_class_embeddings_input_dim == (
        6 * unet.addition_time_embed_dim + pipe.text_encoder_2.config.projection_dim
    )
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.scheduler.config.timestep_spacing == "leading"


@pytest.mark.parametrize("build", [build_tiny_sd15, build_tiny_sdxl])
def test_a_build_is_reproducible_from_its_seed(build: object) -> None:
    first, again, other = (_weights(build(seed)) for seed in (3, 3, 4))  # type: ignore[operator]

    assert first.keys() == again.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert any(not torch.equal(first[key], other[key]) for key in first)


def test_a_build_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)

    build_tiny_sd15()

    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("family", "prefixes"),
    [
        ("sd15", {"model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."}),
        (
            "sdxl",
            {
                "model.diffusion_model.",
                "first_stage_model.",
                "conditioner.embedders.0.transformer.text_model.",
                "conditioner.embedders.1.model.",
            },
        ),
    ],
)
def test_single_file_uses_the_original_layout(models: TinyModels, family: str, prefixes: set[str]) -> None:
    spec: ModelSpec = getattr(models, f"{family}_file")
    with safe_open(spec.path, framework="pt") as checkpoint:
        keys = set(checkpoint.keys())

    assert {next(p for p in prefixes if key.startswith(p)) for key in keys} == prefixes
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "model.diffusion_model.out.2.weight" in keys
    assert "first_stage_model.decoder.mid.attn_1.q.weight" in keys
    config = Path(spec.config_path or "")
    assert json.loads((config / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert not list(config.rglob("*.safetensors"))


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_single_file_loads_back_the_same_weights(models: TinyModels, family: str) -> None:
    from_folder = load_pipeline(getattr(models, family), device="cpu", dtype=torch.float32)
    from_file = load_pipeline(getattr(models, f"{family}_file"), device="cpu", dtype=torch.float32)

    folder_weights, file_weights = _weights(from_folder), _weights(from_file)
    assert folder_weights.keys() == file_weights.keys()
    assert all(torch.equal(folder_weights[key], file_weights[key]) for key in folder_weights)
    assert type(from_file.scheduler) is type(from_folder.scheduler)


def test_ensure_demo_models_builds_once(tmp_path: Path) -> None:
    first = ensure_demo_models(tmp_path)
    stamps = {path: (path.stat().st_ino, (path / "model_index.json").stat().st_mtime_ns) for path in first}

    second = ensure_demo_models(tmp_path)

    assert first == second == [tmp_path / name for name in DEMO_MODELS]
    assert {path: (path.stat().st_ino, (path / "model_index.json").stat().st_mtime_ns) for path in second} == stamps
    # Nothing half-written or left over next to the models.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*DEMO_MODELS, "loras", "vae"])


def test_racing_builders_leave_complete_models(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(ensure_demo_models, [tmp_path, tmp_path]))

    assert results[0] == results[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*DEMO_MODELS, "loras", "vae"])
    for path in results[0]:
        assert (path / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_the_demo_model_generates(tmp_path: Path, runner: GenerationRunner) -> None:
    sd15, _ = ensure_demo_models(tmp_path)
    spec = ModelSpec(name="demo-sd15-test", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path=str(sd15))

    output = runner.run(spec, request(width=64, height=96))

    assert output.images[0].size == (64, 96)


def test_demo_main_prints_the_model_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main([str(tmp_path)]) == 0

    assert capsys.readouterr().out.split() == [str(tmp_path / name) for name in DEMO_MODELS]
    assert demo.main([]) == 2
