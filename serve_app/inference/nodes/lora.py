"""LoRA files read into low-rank layer pairs, and patched into a model's weights for the length of one call.

No peft: like InvokeAI's own patcher, a LoRA is merged into the target weights (W += weight * scale * up @ down)
on entry and the original weights are copied back on exit, so a model after the call is bit-for-bit the model
before it, and a LoRA at weight 0 touches nothing. Callers serialize calls on a model (the replica does).

Key layouts read: peft/diffusers (`unet.<module>.lora_A.weight`, `lora_B.weight`), the older diffusers one
(`<module>.lora.down.weight`, `.lora.up.weight`) and kohya/A1111
(`lora_unet_<module_with_underscores>.lora_down.weight`, `lora_up.weight`, `.alpha`; text encoders as `lora_te_`,
`lora_te1_`, `lora_te2_`). Module names are matched against
diffusers' names; text-encoder names match with or without the `text_model.` prefix transformers 5 dropped.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from serve_app.domain.errors import GenerationFailed

logger = logging.getLogger(__name__)

UNET = "unet"
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"

# (key suffix for the down/A matrix, for the up/B matrix), by layout.
_PAIRS = (
    (".lora_A.weight", ".lora_B.weight"),
    (".lora_A.default.weight", ".lora_B.default.weight"),
    (".lora.down.weight", ".lora.up.weight"),
    (".lora_down.weight", ".lora_up.weight"),
)
# Prefix -> (target model, whether module names have dots replaced by underscores).
_PREFIXES = (
    ("unet.", UNET, False),
    ("text_encoder_2.", TEXT_ENCODER_2, False),
    ("text_encoder.", TEXT_ENCODER, False),
    ("lora_unet_", UNET, True),
    ("lora_te2_", TEXT_ENCODER_2, True),
    ("lora_te1_", TEXT_ENCODER, True),
    ("lora_te_", TEXT_ENCODER, True),
)
_TEXT_MODEL = "text_model."


@dataclass(frozen=True)
class LoRALayer:
    """One low-rank update: `up @ down`, scaled by `alpha / rank` when the file gives an alpha."""

    target: str
    module: str
    underscored: bool
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, shape: torch.Size, weight: float) -> torch.Tensor:
        """The float32 weight update for a parameter of `shape` at LoRA `weight`."""
        scale = (self.alpha / self.rank if self.alpha is not None else 1.0) * weight
        product = self.up.float().flatten(1) @ self.down.float().flatten(1)
        return (product * scale).reshape(shape)


@dataclass(frozen=True)
class LoRAModel:
    """The layers of one LoRA file, on the CPU in their stored dtype."""

    name: str
    layers: tuple[LoRALayer, ...]

    def targets(self) -> set[str]:
        return {layer.target for layer in self.layers}


def read_lora(path: str | Path, *, name: str | None = None) -> LoRAModel:
    """Parse a LoRA `.safetensors` file; GenerationFailed when it cannot be read or holds no LoRA layer."""
    label = name or Path(path).stem
    try:
        state = load_file(str(path), device="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        raise GenerationFailed(f"Could not read LoRA {label}: {exc}", error_type="ModelLoadError") from exc
    layers = parse_lora_state_dict(state)
    if not layers:
        raise GenerationFailed(f"LoRA {label} holds no LoRA layers this server can apply", error_type="ModelLoadError")
    return LoRAModel(name=label, layers=tuple(layers))


def parse_lora_state_dict(state: Mapping[str, torch.Tensor]) -> list[LoRALayer]:
    """The low-rank pairs of a LoRA state dict in any of the layouts in this module's docstring."""
    layers: list[LoRALayer] = []
    skipped = 0
    for key in state:
        for down_suffix, up_suffix in _PAIRS:
            if not key.endswith(down_suffix):
                continue
            base = key[: -len(down_suffix)]
            up = state.get(base + up_suffix)
            located = _locate(base)
            if up is None or located is None:
                skipped += 1
                break
            target, module, underscored = located
            alpha = state.get(base + ".alpha")
            layers.append(
                LoRALayer(
                    target=target,
                    module=module,
                    underscored=underscored,
                    down=state[key],
                    up=up,
                    alpha=float(alpha.item()) if alpha is not None else None,
                )
            )
            break
    if skipped:
        logger.warning("Skipped %d LoRA entries of an unknown layout", skipped)
    return layers


def _locate(base: str) -> tuple[str, str, bool] | None:
    for prefix, target, underscored in _PREFIXES:
        if base.startswith(prefix):
            return target, base[len(prefix) :], underscored
    return None


# Per model: module name (dotted, underscored, with and without `text_model.`) -> module with a weight.
_MODULE_INDEX: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, torch.nn.Module]] = weakref.WeakKeyDictionary()


def _module_index(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    index = _MODULE_INDEX.get(model)
    if index is None:
        index = {}
        for name, module in model.named_modules():
            if not isinstance(getattr(module, "weight", None), torch.Tensor) or not name:
                continue
            aliases = {name, name[len(_TEXT_MODEL) :] if name.startswith(_TEXT_MODEL) else _TEXT_MODEL + name}
            for alias in aliases:
                index[alias] = module
                index[alias.replace(".", "_")] = module
        _MODULE_INDEX[model] = index
    return index


@contextmanager
def lora_patched(
    model: torch.nn.Module, target: str, loras: Iterable[tuple[LoRAModel, float]]
) -> Iterator[torch.nn.Module]:
    """`model` with the `target` layers of `loras` merged in at their weights, restored exactly on exit."""
    index = _module_index(model)
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    try:
        with torch.no_grad():
            for lora, weight in loras:
                if weight == 0:
                    continue
                matched = 0
                for layer in lora.layers:
                    if layer.target != target:
                        continue
                    module = index.get(layer.module)
                    if module is None:
                        continue
                    param = module.weight
                    if (
                        not isinstance(param, torch.Tensor)
                        or param.numel() != layer.up.shape[0] * layer.down[0].numel()
                    ):
                        raise GenerationFailed(
                            f"LoRA {lora.name} does not fit layer {layer.module} of this model",
                            error_type="IncompatibleLoRA",
                        )
                    if id(param) not in saved:
                        saved[id(param)] = (param, param.detach().clone())
                    delta = layer.delta(param.shape, weight).to(device=param.device)
                    param.copy_((param.float() + delta).to(param.dtype))
                    matched += 1
                if matched == 0 and any(layer.target == target for layer in lora.layers):
                    raise GenerationFailed(
                        f"LoRA {lora.name} matches no layer of this {target}; is it for another model family?",
                        error_type="IncompatibleLoRA",
                    )
        yield model
    finally:
        with torch.no_grad():
            for param, original in saved.values():
                param.copy_(original)
