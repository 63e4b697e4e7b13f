"""probe(): what a model file or folder is, from configs and tensor names/shapes; and the tiny test models."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from serve_app.domain.errors import InvalidRequest, UnsupportedMediaType
from serve_app.domain.models import ModelFamily, ModelFormat, ModelType, ModelVariant, PredictionType
from serve_app.inference.nodes.lora import lora_patched, read_lora
from serve_app.inference.tiny import build_tiny_sd15
from serve_app.storage.model_probe import probe, safetensors_header
from tests.support import tiny_models

torch.set_num_threads(1)

SD1, SD2, SDXL = ModelFamily.SD1, ModelFamily.SD2, ModelFamily.SDXL
MAIN, VAE, LORA, EMBEDDING = ModelType.MAIN, ModelType.VAE, ModelType.LORA, ModelType.EMBEDDING
CHECKPOINT, DIFFUSERS, LYCORIS = ModelFormat.CHECKPOINT, ModelFormat.DIFFUSERS, ModelFormat.LYCORIS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny-model builder's output, built once for this module."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "sd1_folder": tiny_models.sd1_folder(root),
        "sdxl_folder": tiny_models.sdxl_folder(root),
        "sd1_single_file": tiny_models.sd1_single_file(root),
        "sdxl_single_file": tiny_models.sdxl_single_file(root),
        "sd1_inpaint_folder": tiny_models.sd1_inpaint_folder(root),
        "vae_folder": tiny_models.vae_folder(root),
        "lora_sd1": tiny_models.peft_lora(root),
        "lora_sdxl": tiny_models.peft_lora(root, base="sdxl"),
        "ti_a1111": tiny_models.textual_inversion(root, name="ti-a", fmt="a1111"),
        "ti_diffusers": tiny_models.textual_inversion(root, name="ti-d", fmt="diffusers", vectors=1),
        "ti_sdxl": tiny_models.textual_inversion(root, name="ti-x", fmt="sdxl"),
    }


@pytest.mark.parametrize(
    ("builder", "name", "base", "type_", "format_", "variant"),
    [
        ("sd1_folder", "tiny-sd1", SD1, MAIN, DIFFUSERS, ModelVariant.NORMAL),
        ("sdxl_folder", "tiny-sdxl", SDXL, MAIN, DIFFUSERS, ModelVariant.NORMAL),
        ("sd1_single_file", "tiny-sd1-file", SD1, MAIN, CHECKPOINT, ModelVariant.NORMAL),
        ("sdxl_single_file", "tiny-sdxl-file", SDXL, MAIN, CHECKPOINT, ModelVariant.NORMAL),
        ("sd1_inpaint_folder", "tiny-sd1-inpaint", SD1, MAIN, DIFFUSERS, ModelVariant.INPAINT),
        ("vae_folder", "tiny-vae", SD1, VAE, DIFFUSERS, None),
        ("lora_sd1", "tiny-lora-sd-1-0", SD1, LORA, LYCORIS, None),
        # Tiny LoRAs are too narrow to tell by width; the trainer metadata peft_lora writes decides.
        ("lora_sdxl", "tiny-lora-sdxl-0", SDXL, LORA, LYCORIS, None),
        ("ti_a1111", "ti-a", SD1, EMBEDDING, ModelFormat.EMBEDDING_FILE, None),
        ("ti_diffusers", "ti-d", SD1, EMBEDDING, ModelFormat.EMBEDDING_FILE, None),
        ("ti_sdxl", "ti-x", SDXL, EMBEDDING, ModelFormat.EMBEDDING_FILE, None),
    ],
)
def test_probes_every_tiny_model(
    tiny: dict[str, Path],
    builder: str,
    name: str,
    base: ModelFamily,
    type_: ModelType,
    format_: ModelFormat,
    variant: ModelVariant | None,
) -> None:
    probed = probe(tiny[builder])
    assert (probed.name, probed.base, probed.type, probed.format, probed.variant) == (
        name,
        base,
        type_,
        format_,
        variant,
    )
    if type_ is MAIN:
        assert probed.prediction_type is PredictionType.EPSILON
        assert probed.upcast_attention is False
        assert probed.repo_variant == ""
    if format_ is CHECKPOINT:
        # Single files load offline from the `<stem>.config/` folder written next to them.
        assert probed.config_path == str(tiny[builder].with_name(f"{name}.config"))
    else:
        assert probed.config_path is None


def test_base_hint_decides_only_what_the_files_cannot(tiny: dict[str, Path]) -> None:
    # 32-wide embeddings and a 0.18215-scaled VAE could be sd-1 or sd-2: the hint picks.
    assert probe(tiny["ti_a1111"], base_hint=SD2).base is SD2
    assert probe(tiny["vae_folder"], base_hint=SD2).base is SD2
    # What the files say wins over the hint.
    assert probe(tiny["sdxl_folder"], base_hint=SD1).base is SDXL
    assert probe(tiny["ti_sdxl"], base_hint=SD1).base is SDXL
    assert probe(tiny["lora_sdxl"], base_hint=SD1).base is SDXL


def test_a_single_files_config_folder_is_not_a_model_of_its_own(tiny: dict[str, Path]) -> None:
    config = tiny["sd1_single_file"].with_name("tiny-sd1-file.config")
    assert (config / "model_index.json").is_file()
    with pytest.raises(UnsupportedMediaType):
        probe(config)


# --- diffusers folders from their JSON configs alone ----------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _pipeline(folder: Path, class_name: str, **configs: dict[str, Any]) -> Path:
    """A diffusers pipeline folder: model_index.json plus `<component>/config.json` (scheduler: scheduler_config)."""
    _write_json(folder / "model_index.json", {"_class_name": class_name})
    for component, config in configs.items():
        name = "scheduler_config.json" if component == "scheduler" else "config.json"
        _write_json(folder / component / name, config)
    return folder


def test_sd2_pipelines_by_text_encoder_width_or_v_prediction(tmp_path: Path) -> None:
    wide = probe(_pipeline(tmp_path / "sd21-base", "StableDiffusionPipeline", text_encoder={"hidden_size": 1024}))
    v = probe(
        _pipeline(
            tmp_path / "sd21",
            "StableDiffusionImg2ImgPipeline",
            text_encoder={"hidden_size": 768},
            scheduler={"prediction_type": "v_prediction"},
            unet={"in_channels": 4, "upcast_attention": True},
        )
    )
    sd1 = probe(_pipeline(tmp_path / "sd15", "StableDiffusionPipeline", text_encoder={"hidden_size": 768}))
    assert (wide.base, v.base, sd1.base) == (SD2, SD2, SD1)
    assert (v.prediction_type, v.upcast_attention) == (PredictionType.V_PREDICTION, True)


def test_sdxl_refiner_has_no_first_text_encoder(tmp_path: Path) -> None:
    refiner = _pipeline(tmp_path / "refiner", "StableDiffusionXLImg2ImgPipeline", text_encoder_2={}, unet={})
    base = _pipeline(tmp_path / "base", "StableDiffusionXLPipeline", text_encoder={}, text_encoder_2={})
    assert probe(refiner).base is ModelFamily.SDXL_REFINER
    assert probe(base).base is SDXL


@pytest.mark.parametrize(
    ("class_name", "base"), [("StableDiffusion3Pipeline", ModelFamily.SD3), ("FluxPipeline", ModelFamily.FLUX)]
)
def test_flow_matching_pipelines(tmp_path: Path, class_name: str, base: ModelFamily) -> None:
    probed = probe(_pipeline(tmp_path / "m", class_name, transformer={"in_channels": 64}))
    assert (probed.base, probed.type, probed.format, probed.prediction_type) == (base, MAIN, DIFFUSERS, None)


@pytest.mark.parametrize(("in_channels", "variant"), [(9, ModelVariant.INPAINT), (5, ModelVariant.DEPTH)])
def test_variant_from_unet_input_channels(tmp_path: Path, in_channels: int, variant: ModelVariant) -> None:
    folder = _pipeline(tmp_path / "m", "StableDiffusionInpaintPipeline", unet={"in_channels": in_channels})
    assert probe(folder).variant is variant


def test_fp16_weights_give_the_repo_variant(tmp_path: Path) -> None:
    folder = _pipeline(tmp_path / "m", "StableDiffusionXLPipeline", text_encoder={}, unet={})
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert probe(folder).repo_variant == "fp16"


def test_unknown_pipeline_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMediaType, match="Cannot recognise kandinsky as a model"):
        probe(_pipeline(tmp_path / "kandinsky", "KandinskyPipeline"))


@pytest.mark.parametrize(
    ("config", "sidecar", "type_", "base"),
    [
        ({"_class_name": "AutoencoderKL", "scaling_factor": 0.13025}, None, VAE, SDXL),
        ({"_class_name": "AutoencoderKL", "scaling_factor": 0.18215}, {"base": "sd-2"}, VAE, SD2),
        ({"_class_name": "AutoencoderKL", "scaling_factor": 0.18215}, None, VAE, SD1),
        ({"_class_name": "ControlNetModel", "cross_attention_dim": 768}, None, ModelType.CONTROLNET, SD1),
        ({"_class_name": "ControlNetModel", "cross_attention_dim": 1024}, None, ModelType.CONTROLNET, SD2),
        ({"_class_name": "ControlNetModel", "cross_attention_dim": 2048}, None, ModelType.CONTROLNET, SDXL),
        (
            {"_class_name": "ControlNetModel", "cross_attention_dim": 96, "addition_embed_type": "text_time"},
            None,
            ModelType.CONTROLNET,
            SDXL,
        ),
        ({"_class_name": "T2IAdapter", "adapter_type": "full_adapter_xl"}, None, ModelType.T2I_ADAPTER, SDXL),
        ({"_class_name": "T2IAdapter", "adapter_type": "full_adapter"}, None, ModelType.T2I_ADAPTER, SD1),
        ({"architectures": ["CLIPVisionModelWithProjection"]}, None, ModelType.CLIP_VISION, ModelFamily.ANY),
    ],
)
def test_component_folders(
    tmp_path: Path, config: dict[str, Any], sidecar: dict[str, Any] | None, type_: ModelType, base: ModelFamily
) -> None:
    _write_json(tmp_path / "component" / "config.json", config)
    if sidecar is not None:
        _write_json(tmp_path / "component" / "serve_app.json", sidecar)
    probed = probe(tmp_path / "component")
    assert (probed.name, probed.type, probed.base, probed.format) == ("component", type_, base, DIFFUSERS)


def test_embedding_and_lora_folders(tmp_path: Path, tiny: dict[str, Path]) -> None:
    embedding = tmp_path / "my-embedding"
    embedding.mkdir()
    save_file({"<cat-toy>": torch.zeros(1024)}, str(embedding / "learned_embeds.safetensors"))
    lora = tmp_path / "my-lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(tiny["lora_sdxl"].read_bytes())
    probed = probe(embedding)
    assert (probed.name, probed.type, probed.format, probed.base) == (
        "my-embedding",
        EMBEDDING,
        ModelFormat.EMBEDDING_FOLDER,
        SD2,
    )
    probed = probe(lora)
    assert (probed.name, probed.type, probed.format, probed.base) == ("my-lora", LORA, DIFFUSERS, SDXL)


# --- single files from their tensor names and shapes ----------------------------------------------------------


def _safetensors(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Path:
    save_file({name: torch.zeros(shape) for name, shape in shapes.items()}, str(path), metadata=metadata)
    return path


def _ldm(text_encoder_key: str, in_channels: int = 4) -> dict[str, tuple[int, ...]]:
    return {
        "model.diffusion_model.input_blocks.0.0.weight": (2, in_channels, 1, 1),
        "model.diffusion_model.out.2.weight": (4, 2, 1, 1),
        "first_stage_model.decoder.conv_in.weight": (2, 4, 1, 1),
        text_encoder_key: (2, 2),
    }


@pytest.mark.parametrize(
    ("text_encoder_key", "base"),
    [
        ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", SD1),
        ("cond_stage_model.model.token_embedding.weight", SD2),
        ("conditioner.embedders.1.model.token_embedding.weight", SDXL),
        ("conditioner.embedders.0.model.token_embedding.weight", ModelFamily.SDXL_REFINER),
    ],
)
def test_main_checkpoint_base_by_text_encoder_layout(tmp_path: Path, text_encoder_key: str, base: ModelFamily) -> None:
    probed = probe(_safetensors(tmp_path / "model.safetensors", _ldm(text_encoder_key)))
    assert (probed.name, probed.base, probed.type, probed.format) == ("model", base, MAIN, CHECKPOINT)
    # InvokeAI's defaults: SD2 checkpoints are the 768-v ones.
    sd2 = base is SD2
    assert probed.prediction_type is (PredictionType.V_PREDICTION if sd2 else PredictionType.EPSILON)
    assert probed.upcast_attention is sd2
    assert probed.config_path is None  # no `model.config/` next to it


def test_main_checkpoint_variant_and_pickled_state_dict(tmp_path: Path) -> None:
    # LDM training checkpoints are zip pickles with the weights under "state_dict".
    state = {name: torch.zeros(shape) for name, shape in _ldm("cond_stage_model.transformer.x", 9).items()}
    torch.save({"state_dict": state, "global_step": 10}, tmp_path / "inpaint.ckpt")
    probed = probe(tmp_path / "inpaint.ckpt")
    assert (probed.base, probed.type, probed.variant) == (SD1, MAIN, ModelVariant.INPAINT)


def test_legacy_non_zip_pickles_are_read(tmp_path: Path) -> None:
    state = {name: torch.zeros(shape) for name, shape in _ldm("cond_stage_model.model.x", 5).items()}
    torch.save(state, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    probed = probe(tmp_path / "old.ckpt")
    assert (probed.base, probed.variant) == (SD2, ModelVariant.DEPTH)


def test_a_pickle_that_would_run_code_is_refused_unopened(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    torch.save({"model.diffusion_model.x": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsupportedMediaType):
        probe(tmp_path / "evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("shapes", "metadata", "hint", "base"),
    [
        # kohya: SDXL by the second text encoder, else by the cross-attention width of attn2.to_k.
        ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 8)}, None, None, SDXL),
        ({"lora_unet_down_blocks_1_attentions_0_attn2_to_k.lora_down.weight": (4, 1024)}, None, None, SD2),
        (
            {"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048)},
            None,
            None,
            SDXL,
        ),  # fmt: skip
        # LyCORIS layers, with the base from kohya's metadata.
        ({"lora_unet_x.hada_w1_a": (4, 4)}, {"ss_base_model_version": "sdxl_base_v1-0"}, None, SDXL),
        ({"lora_unet_x.lokr_w1": (4, 4)}, {"ss_base_model_version": "sd_v2"}, None, SD2),
        ({"lora_unet_x.diff": (4, 4)}, None, SD2, SD2),
        ({"unet.down_blocks.0.attentions.0.attn2.to_k.lora.down.weight": (4, 768)}, None, SDXL, SD1),
    ],
)
def test_lora_files(
    tmp_path: Path,
    shapes: dict[str, tuple[int, ...]],
    metadata: dict[str, str] | None,
    hint: ModelFamily | None,
    base: ModelFamily,
) -> None:
    probed = probe(_safetensors(tmp_path / "style.safetensors", shapes, metadata), base_hint=hint)
    assert (probed.name, probed.type, probed.format, probed.base) == ("style", LORA, LYCORIS, base)


@pytest.mark.parametrize(
    ("shapes", "base"),
    [
        ({"emb_params": (3, 768)}, SD1),
        ({"emb_params": (3, 1024)}, SD2),
        ({"<token>": (768,)}, SD1),
        ({"clip_l": (2, 768), "clip_g": (2, 1280)}, SDXL),
    ],
)
def test_embedding_files_by_width(tmp_path: Path, shapes: dict[str, tuple[int, ...]], base: ModelFamily) -> None:
    probed = probe(_safetensors(tmp_path / "ti.safetensors", shapes))
    assert (probed.type, probed.format, probed.base) == (EMBEDDING, ModelFormat.EMBEDDING_FILE, base)


@pytest.mark.parametrize(
    ("shapes", "name", "hint", "type_", "base"),
    [
        (
            {"encoder.conv_in.weight": (2, 3, 1, 1), "decoder.conv_out.weight": (3, 2, 1, 1)},
            "vae-ft-mse",
            None,
            VAE,
            SD1,
        ),
        (
            {"encoder.conv_in.weight": (2, 3, 1, 1), "decoder.conv_out.weight": (3, 2, 1, 1)},
            "sdxl_vae",
            None,
            VAE,
            SDXL,
        ),
        ({"encoder.conv_in.weight": (2, 3, 1, 1), "decoder.conv_out.weight": (3, 2, 1, 1)}, "vae", SD2, VAE, SD2),
        ({"first_stage_model.encoder.conv_in.weight": (2, 3, 1, 1)}, "extracted", None, VAE, SD1),
        (
            {"control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (2, 1024)},
            "cn",
            None,
            ModelType.CONTROLNET,
            SD2,
        ),  # fmt: skip
        ({"control_model.input_hint_block.0.weight": (2, 3, 1, 1)}, "cn", SDXL, ModelType.CONTROLNET, SDXL),
        (
            {"model.0.weight": (2, 3, 1, 1), "model.1.sub.0.RDB1.conv1.0.weight": (2, 2, 1, 1)},
            "4x",
            None,
            ModelType.SPANDREL,
            ModelFamily.ANY,
        ),  # fmt: skip
        (
            {"conv_first.weight": (2, 3, 1, 1), "body.0.rdb1.conv1.weight": (2, 2, 1, 1)},
            "4x",
            None,
            ModelType.SPANDREL,
            ModelFamily.ANY,
        ),  # fmt: skip
    ],
)
def test_vae_controlnet_and_upscaler_files(
    tmp_path: Path,
    shapes: dict[str, tuple[int, ...]],
    name: str,
    hint: ModelFamily | None,
    type_: ModelType,
    base: ModelFamily,
) -> None:
    probed = probe(_safetensors(tmp_path / f"{name}.safetensors", shapes), base_hint=hint)
    assert (probed.name, probed.type, probed.base, probed.format) == (name, type_, base, CHECKPOINT)


def test_pickled_upscaler_wrapped_in_params_ema(tmp_path: Path) -> None:
    state = {"conv_first.weight": torch.zeros(2, 3, 1, 1), "RRDB_trunk.0.RDB1.conv1.weight": torch.zeros(2, 2, 1, 1)}
    torch.save({"params_ema": state}, tmp_path / "RealESRGAN_x4.pth")
    assert probe(tmp_path / "RealESRGAN_x4.pth").type is ModelType.SPANDREL


# --- what is not a model ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda folder: _bytes(folder / "noise.safetensors", bytes(range(256)) * 64),
        lambda folder: _bytes(folder / "noise.ckpt", bytes(range(256)) * 64),
        lambda folder: _bytes(folder / "config.json", json.dumps({"_class_name": "AutoencoderKL"}).encode()),
        lambda folder: _bytes(folder / "notes.txt", b"hello"),
        lambda folder: _safetensors(folder / "unknown.safetensors", {"foo.weight": (2, 2), "bar.weight": (2,)}),
        lambda folder: _bytes(folder / "empty.safetensors", struct.pack("<Q", 2) + b"{}"),
        lambda folder: _mkdir(folder / "empty-folder"),
    ],
    ids=["random-safetensors", "random-ckpt", "json-file", "text-file", "unknown-tensors", "no-tensors", "folder"],
)
def test_what_is_no_model_is_unsupported(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    with pytest.raises(UnsupportedMediaType, match=f"Cannot recognise {path.name} as a model"):
        probe(path)


def test_a_huge_declared_header_is_never_read(tmp_path: Path) -> None:
    # 1 TiB declared: reading it would allocate that much; the header is refused from its length alone.
    path = _bytes(tmp_path / "huge.safetensors", struct.pack("<Q", 2**40) + b'{"a": {}}')
    assert safetensors_header(path) is None
    with pytest.raises(UnsupportedMediaType):
        probe(path)


def test_a_missing_path_is_an_invalid_request(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist") as raised:
        probe(tmp_path / "nothing.safetensors")
    assert type(raised.value) is InvalidRequest  # a 400, not the 415 of an unreadable model


# --- the peft LoRA builder ----------------------------------------------------------------------------------


def test_peft_lora_is_seeded(tmp_path: Path) -> None:
    first = tiny_models.peft_lora(tmp_path / "a", seed=3).read_bytes()
    again = tiny_models.peft_lora(tmp_path / "b", seed=3).read_bytes()
    other = tiny_models.peft_lora(tmp_path / "c", seed=4).read_bytes()
    assert first == again
    assert first != other


def test_peft_lora_patches_the_unet_as_peft_applies_it(tiny: dict[str, Path]) -> None:
    """Our patcher (serve_app.inference.nodes.lora) merging the file gives the output of peft running it."""
    lora = read_lora(tiny["lora_sd1"])
    modules = {layer.module for layer in lora.layers}
    assert lora.targets() == {"unet"}
    assert modules and all(module.endswith(("to_q", "to_k", "to_v", "to_out.0")) for module in modules)

    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    unet = build_tiny_sd15().unet.eval()
    with torch.no_grad():
        plain = unet(sample, 10, encoder_hidden_states=context).sample
        with lora_patched(unet, "unet", [(lora, 1.0)]):
            patched = unet(sample, 10, encoder_hidden_states=context).sample
        restored = unet(sample, 10, encoder_hidden_states=context).sample

    reference = build_tiny_sd15().unet.eval()
    config = LoraConfig(
        r=tiny_models.LORA_RANK, lora_alpha=tiny_models.LORA_RANK, target_modules=tiny_models.LORA_TARGETS
    )
    inject_adapter_in_model(config, reference)
    state = {key.removeprefix("unet."): value for key, value in load_file(tiny["lora_sd1"]).items()}
    set_peft_model_state_dict(reference, state)
    with torch.no_grad():
        by_peft = reference(sample, 10, encoder_hidden_states=context).sample

    assert (patched - plain).abs().max() > 1e-3
    torch.testing.assert_close(patched, by_peft, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(restored, plain, rtol=0, atol=0)


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path
