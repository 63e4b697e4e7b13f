"""LoRAs merged for one call and removed after it; standalone VAEs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from serve_app.domain.errors import GenerationFailed, InvalidRequest
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.inference.nodes import LoRAWeight, ModelComponents, decode
from serve_app.inference.nodes.lora import TEXT_ENCODER, UNET, LoRALayer, read_lora
from serve_app.inference.tiny import build_tiny_lora, build_tiny_sd15
from tests.inference.conftest import TinyModels
from tests.inference.nodes.conftest import Extras, conditionings, generate, generate_latents, pixels


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def test_a_lora_changes_pixels_at_weight_one_and_nothing_at_zero(
    models: TinyModels, components: ModelComponents, extras: Extras
) -> None:
    plain = pixels(generate(components, models.sd15))
    at_one = pixels(generate(components, models.sd15, loras=[LoRAWeight(extras.lora, 1.0)]))
    at_zero = pixels(generate(components, models.sd15, loras=[LoRAWeight(extras.lora, 0.0)]))
    after = pixels(generate(components, models.sd15))

    assert np.abs(plain - at_one).mean() > 2
    assert np.array_equal(plain, at_zero)
    assert np.array_equal(plain, after)


def test_the_weight_scales_the_effect(models: TinyModels, components: ModelComponents, extras: Extras) -> None:
    plain = generate_latents(components, models.sd15)
    small = generate_latents(components, models.sd15, loras=[LoRAWeight(extras.lora, 0.1)])
    large = generate_latents(components, models.sd15, loras=[LoRAWeight(extras.lora, 1.0)])

    assert 0 < (small - plain).abs().mean() < (large - plain).abs().mean()


def test_weights_are_restored_bit_for_bit_even_when_the_call_fails(
    models: TinyModels, components: ModelComponents, extras: Extras
) -> None:
    unet = components.unet(models.sd15)
    encoder = components.text_encoders(models.sd15)[0].encoder
    before_unet, before_encoder = _weights(unet), _weights(encoder)

    with (
        pytest.raises(RuntimeError, match="boom"),
        components.unet_with_loras(models.sd15, [LoRAWeight(extras.lora, 0.8)]) as patched,
    ):
        assert patched is unet
        changed = _weights(unet)
        assert any(not torch.equal(changed[k], before_unet[k]) for k in before_unet)
        raise RuntimeError("boom")
    with components.text_encoders_with_loras(models.sd15, [LoRAWeight(extras.lora, 1.0)]):
        pass

    after_unet, after_encoder = _weights(unet), _weights(encoder)
    assert all(torch.equal(after_unet[k], before_unet[k]) for k in before_unet)
    assert all(torch.equal(after_encoder[k], before_encoder[k]) for k in before_encoder)


def test_the_text_encoder_part_changes_the_conditioning(
    models: TinyModels, components: ModelComponents, extras: Extras
) -> None:
    plain, _ = conditionings(components, models.sd15)
    patched, _ = conditionings(components, models.sd15, loras=[LoRAWeight(extras.lora, 1.0)])

    assert (plain.embeds - patched.embeds).abs().mean() > 1e-3


def test_parsed_loras_are_cached(components: ModelComponents, extras: Extras) -> None:
    assert components.lora(extras.lora) is components.lora(extras.lora)
    assert {UNET, TEXT_ENCODER} <= components.lora(extras.lora).targets()


def test_kohya_layout_with_alpha_gives_the_same_result(
    tmp_path: Path, models: TinyModels, components: ModelComponents, extras: Extras
) -> None:
    # The same low-rank updates in kohya's layout: underscored names, lora_down/lora_up, alpha = rank (scale 1).
    state = load_file(extras.lora.path)
    kohya: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        module, _, kind = rest.rpartition(".lora_")
        base = ("lora_unet_" if prefix == "unet" else "lora_te_") + module.replace(".", "_")
        kohya[f"{base}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value
        kohya[f"{base}.alpha"] = torch.tensor(float(value.shape[0] if kind.startswith("A") else value.shape[1]))
    path = tmp_path / "kohya.safetensors"
    save_file(kohya, str(path))
    spec = ModelSpec(
        name="kohya", family=ModelFamily.SD1, format=ModelFormat.LYCORIS, path=str(path), type=ModelType.LORA
    )

    ours = generate_latents(components, models.sd15, loras=[LoRAWeight(extras.lora, 1.0)])
    theirs = generate_latents(components, models.sd15, loras=[LoRAWeight(spec, 1.0)])

    assert torch.allclose(ours, theirs, atol=1e-5)
    # Half the alpha halves each update.
    kohya = {k: (v / 2 if k.endswith(".alpha") else v) for k, v in kohya.items()}
    save_file(kohya, str(tmp_path / "half.safetensors"))
    layers = read_lora(tmp_path / "half.safetensors").layers
    assert all(isinstance(layer, LoRALayer) and layer.alpha == 2.0 for layer in layers)


def test_an_sdxl_lora_patches_both_text_encoders(
    models: TinyModels, components: ModelComponents, extras: Extras
) -> None:
    plain = generate_latents(components, models.sdxl)
    patched = generate_latents(components, models.sdxl, loras=[LoRAWeight(extras.lora_sdxl, 1.0)])
    after = generate_latents(components, models.sdxl)

    assert (plain - patched).abs().mean() > 1e-3
    assert torch.equal(plain, after)
    assert components.lora(extras.lora_sdxl).targets() == {"unet", "text_encoder", "text_encoder_2"}


def test_a_lora_for_another_family_is_a_clear_error(
    models: TinyModels, components: ModelComponents, extras: Extras
) -> None:
    with pytest.raises(GenerationFailed) as raised:
        generate_latents(components, models.sd15, loras=[LoRAWeight(extras.lora_sdxl, 1.0)])

    assert raised.value.error_type == "IncompatibleLoRA"


def test_a_file_without_lora_layers_is_rejected(tmp_path: Path) -> None:
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "x.safetensors"))

    with pytest.raises(GenerationFailed):
        read_lora(tmp_path / "x.safetensors")
    with pytest.raises(GenerationFailed):
        read_lora(tmp_path / "missing.safetensors")


def test_a_separate_vae_decodes_to_different_pixels(
    models: TinyModels, components: ModelComponents, extras: Extras
) -> None:
    latents = generate_latents(components, models.sd15)

    own = pixels(decode(components.vae(models.sd15), latents))
    separate_vae = components.vae(extras.vae)
    other = pixels(decode(separate_vae, latents))

    assert separate_vae is not components.vae(models.sd15)
    assert separate_vae is components.vae(extras.vae)
    assert other.shape == own.shape
    assert np.abs(own - other).mean() > 5


def test_a_single_file_vae_takes_its_config_from_the_main_model(
    tmp_path: Path, models: TinyModels, components: ModelComponents, extras: Extras
) -> None:
    weights = load_file(str(Path(extras.vae.path) / "diffusion_pytorch_model.safetensors"))
    save_file(weights, str(tmp_path / "vae.safetensors"))
    spec = ModelSpec(
        name="file-vae",
        family=ModelFamily.SD1,
        format=ModelFormat.CHECKPOINT,
        path=str(tmp_path / "vae.safetensors"),
        type=ModelType.VAE,
    )
    latents = generate_latents(components, models.sd15)

    from_file = components.vae(spec, main=models.sd15)

    assert np.array_equal(pixels(decode(from_file, latents)), pixels(decode(components.vae(extras.vae), latents)))


def test_model_types_are_checked(models: TinyModels, components: ModelComponents, extras: Extras) -> None:
    with pytest.raises(InvalidRequest):
        components.pipeline(extras.vae)
    with pytest.raises(InvalidRequest):
        components.lora(models.sd15)


def test_build_tiny_lora_accepts_a_bare_unet(tmp_path: Path) -> None:
    pipe = build_tiny_sd15()
    path = build_tiny_lora(pipe.unet, tmp_path / "unet-only.safetensors")

    assert read_lora(path).targets() == {UNET}
