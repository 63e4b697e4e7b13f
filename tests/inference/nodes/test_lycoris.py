"""LyCORIS updates (LoHa, LoKr, full diffs) in kohya's key layout, merged exactly and removed after the call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.inference.nodes import LoRAWeight, ModelComponents
from serve_app.inference.nodes.lora import FullLayer, LoHaLayer, LoKrLayer, read_lora
from tests.inference.conftest import TinyModels
from tests.inference.nodes.conftest import generate_latents

# A 32x32 attention projection and a 32->32 3x3 convolution of the tiny SD 1.5 UNet.
_LINEAR = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
_CONV = "down_blocks.0.resnets.0.conv1"
_RANK = 4
_ALPHA = 2.0

Tensors = dict[str, torch.Tensor]
# Returns the file's entries for one module and the ΔW they stand for at weight 1.
Builder = Callable[[str, torch.Size, torch.Generator], tuple[Tensors, torch.Tensor]]


def _kohya(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * 0.3


def _loha(module: str, shape: torch.Size, g: torch.Generator) -> tuple[Tensors, torch.Tensor]:
    out, rest = shape[0], int(torch.Size(shape[1:]).numel())
    w1_a, w1_b, w2_a, w2_b = (
        _randn(g, out, _RANK),
        _randn(g, _RANK, rest),
        _randn(g, out, _RANK),
        _randn(g, _RANK, rest),
    )
    key = _kohya(module)
    entries = {
        f"{key}.hada_w1_a": w1_a, f"{key}.hada_w1_b": w1_b, f"{key}.hada_w2_a": w2_a, f"{key}.hada_w2_b": w2_b,
        f"{key}.alpha": torch.tensor(_ALPHA),
    }  # fmt: skip
    return entries, ((w1_a @ w1_b) * (w2_a @ w2_b) * (_ALPHA / _RANK)).reshape(shape)


def _lokr(module: str, shape: torch.Size, g: torch.Generator) -> tuple[Tensors, torch.Tensor]:
    # w1 whole [2, 2]; w2 as a rank-4 product [out/2, rest/2].
    out, rest = shape[0], int(torch.Size(shape[1:]).numel())
    w1, w2_a, w2_b = _randn(g, 2, 2), _randn(g, out // 2, _RANK), _randn(g, _RANK, rest // 2)
    key = _kohya(module)
    entries = {
        f"{key}.lokr_w1": w1,
        f"{key}.lokr_w2_a": w2_a,
        f"{key}.lokr_w2_b": w2_b,
        f"{key}.alpha": torch.tensor(_ALPHA),
    }
    return entries, (torch.kron(w1, w2_a @ w2_b) * (_ALPHA / _RANK)).reshape(shape)


def _lokr_whole(module: str, shape: torch.Size, g: torch.Generator) -> tuple[Tensors, torch.Tensor]:
    # Both factors whole: no rank, so the alpha is not applied. For a conv, w2 keeps the kernel.
    if len(shape) == 4:
        w1, w2 = _randn(g, 2, 4), _randn(g, shape[0] // 2, shape[1] // 4, shape[2], shape[3])
        delta = torch.kron(w1[:, :, None, None], w2)
    else:
        w1, w2 = _randn(g, 2, 4), _randn(g, shape[0] // 2, shape[1] // 4)
        delta = torch.kron(w1, w2)
    key = _kohya(module)
    return {f"{key}.lokr_w1": w1, f"{key}.lokr_w2": w2, f"{key}.alpha": torch.tensor(_ALPHA)}, delta


def _full(module: str, shape: torch.Size, g: torch.Generator) -> tuple[Tensors, torch.Tensor]:
    diff = _randn(g, *shape) * 0.1
    key = _kohya(module)
    entries = {f"{key}.diff": diff}
    if len(shape) == 4:  # the convolution has a bias (the attention projection has none)
        entries[f"{key}.diff_b"] = _randn(g, shape[0])
    return entries, diff


_BUILDERS: dict[str, Builder] = {"loha": _loha, "lokr": _lokr, "lokr_whole": _lokr_whole, "full": _full}


def _write(tmp_path: Path, name: str, entries: Tensors) -> ModelSpec:
    path = tmp_path / f"{name}.safetensors"
    save_file(entries, str(path))
    return ModelSpec(name=name, family=ModelFamily.SD1, format=ModelFormat.LYCORIS, path=str(path), type=ModelType.LORA)


def _build(tmp_path: Path, kind: str, unet: torch.nn.Module) -> tuple[ModelSpec, dict[str, torch.Tensor], Tensors]:
    generator = torch.Generator().manual_seed(3)
    modules = dict(unet.named_modules())
    entries: Tensors = {}
    deltas = {}
    for module in (_LINEAR, _CONV):
        more, deltas[module] = _BUILDERS[kind](module, modules[module].weight.shape, generator)
        entries.update(more)
    return _write(tmp_path, f"lycoris-{kind}", entries), deltas, entries


@pytest.mark.parametrize("kind", sorted(_BUILDERS))
def test_each_lycoris_kind_merges_its_exact_update_and_restores(
    tmp_path: Path, models: TinyModels, components: ModelComponents, kind: str
) -> None:
    unet = components.unet(models.sd15)
    spec, deltas, entries = _build(tmp_path, kind, unet)
    modules = dict(unet.named_modules())
    before = {name: value.clone() for name, value in unet.state_dict().items()}

    with components.unet_with_loras(models.sd15, [LoRAWeight(spec, 0.5)]):
        for module, delta in deltas.items():
            assert torch.allclose(modules[module].weight, before[f"{module}.weight"] + 0.5 * delta, atol=1e-6)
        if kind == "full":
            diff_b = entries[f"{_kohya(_CONV)}.diff_b"]
            assert torch.allclose(modules[_CONV].bias, before[f"{_CONV}.bias"] + 0.5 * diff_b, atol=1e-6)

    after = unet.state_dict()
    assert all(torch.equal(after[name], value) for name, value in before.items())


@pytest.mark.parametrize("kind", sorted(_BUILDERS))
def test_weight_zero_changes_nothing_and_weight_one_changes_the_latents(
    tmp_path: Path, models: TinyModels, components: ModelComponents, kind: str
) -> None:
    spec, _, _ = _build(tmp_path, kind, components.unet(models.sd15))

    plain = generate_latents(components, models.sd15, steps=2)
    at_zero = generate_latents(components, models.sd15, steps=2, loras=[LoRAWeight(spec, 0.0)])
    at_one = generate_latents(components, models.sd15, steps=2, loras=[LoRAWeight(spec, 1.0)])

    assert torch.equal(plain, at_zero)
    assert (plain - at_one).abs().mean() > 1e-3
    assert torch.equal(plain, generate_latents(components, models.sd15, steps=2))


def test_the_parsed_layers_have_their_kinds(tmp_path: Path, models: TinyModels, components: ModelComponents) -> None:
    unet = components.unet(models.sd15)
    kinds = {
        kind: {type(layer) for layer in read_lora(_build(tmp_path, kind, unet)[0].path).layers} for kind in _BUILDERS
    }

    assert kinds == {"loha": {LoHaLayer}, "lokr": {LoKrLayer}, "lokr_whole": {LoKrLayer}, "full": {FullLayer}}


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("hada_t1", "hada_t1/hada_t2"),
        ("lokr_t2", "lokr_t2"),
        ("lora_mid.weight", "lora_mid"),
        ("dora_scale", "dora_scale"),
    ],
)
def test_forms_that_cannot_be_applied_are_refused_by_name(tmp_path: Path, extra: str, named: str) -> None:
    key = _kohya(_LINEAR)
    spec = _write(tmp_path, "cp", {f"{key}.hada_w1_a": torch.ones(32, 2), f"{key}.{extra}": torch.ones(2, 2)})

    with pytest.raises(GenerationFailed, match=f"LoRA cp uses .*{named}") as raised:
        read_lora(spec.path, name=spec.name)

    assert raised.value.error_type == "UnsupportedLoRA"


def test_an_update_of_the_wrong_size_is_a_clear_error(
    tmp_path: Path, models: TinyModels, components: ModelComponents
) -> None:
    key = _kohya(_LINEAR)
    spec = _write(
        tmp_path,
        "misfit",
        {f"{key}.hada_w1_a": torch.ones(16, 2), f"{key}.hada_w1_b": torch.ones(2, 32),
         f"{key}.hada_w2_a": torch.ones(16, 2), f"{key}.hada_w2_b": torch.ones(2, 32)},
    )  # fmt: skip
    unet = components.unet(models.sd15)
    before = {name: value.clone() for name, value in unet.state_dict().items()}

    with (
        pytest.raises(GenerationFailed, match=f"LoRA misfit does not fit layer {key[len('lora_unet_') :]}") as raised,
        components.unet_with_loras(models.sd15, [LoRAWeight(spec, 1.0)]),
    ):
        pass

    assert raised.value.error_type == "IncompatibleLoRA"
    assert all(torch.equal(unet.state_dict()[name], value) for name, value in before.items())
