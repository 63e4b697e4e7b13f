"""LoRA and LyCORIS files read into weight updates, and patched into a model's weights for the length of one call.

No peft at run time: like InvokeAI's own patcher, an update is merged into the target weights
(W += weight * scale * ΔW) on entry and the original weights are copied back on exit, so a model after the call
is bit-for-bit the model before it, and a LoRA at weight 0 touches nothing. Callers serialize calls on a model
(the replica does).

Update kinds, per module (`scale` = alpha / rank when the file gives an alpha, else 1):
- LoRA: ΔW = up @ down.
- LoHa (LyCORIS): ΔW = (hada_w1_a @ hada_w1_b) ⊙ (hada_w2_a @ hada_w2_b); rank = hada_w1_b's rows. The CP-decomposed
  form (hada_t1/hada_t2, some conv layers) is refused with a clear error.
- LoKr (LyCORIS): ΔW = kron(w1, w2), each factor given whole (lokr_w1, lokr_w2) or as a product (lokr_w1_a @
  lokr_w1_b, ...); rank = the decomposed factor's inner size, and with no decomposed factor the scale is 1.
  lokr_t2 (CP) is refused.
- Full (LyCORIS `.diff`, plus `.diff_b` for the bias): ΔW = diff, never scaled by alpha.

Key layouts read: peft/diffusers (`unet.<module>.lora_A.weight`, `lora_B.weight`), the older diffusers one
(`<module>.lora.down.weight`, `.lora.up.weight`) and kohya/A1111/LyCORIS
(`lora_unet_<module_with_underscores>.lora_down.weight`, `.hada_w1_a`, `.lokr_w1`, `.diff`, `.alpha`; text
encoders as `lora_te_`, `lora_te1_`, `lora_te2_`). Module names are matched against diffusers' names;
text-encoder names match with or without the `text_model.` prefix transformers 5 dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from serve_app.domain.errors import GenerationFailed

logger = logging.getLogger(__name__)

UNET = "unet"
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"

# Key suffix -> the role of its tensor in an update.
_SUFFIXES = {
    ".lora_A.weight": "down",
    ".lora_B.weight": "up",
    ".lora_A.default.weight": "down",
    ".lora_B.default.weight": "up",
    ".lora.down.weight": "down",
    ".lora.up.weight": "up",
    ".lora_down.weight": "down",
    ".lora_up.weight": "up",
    ".lora_mid.weight": "mid",
    ".hada_w1_a": "hada_w1_a",
    ".hada_w1_b": "hada_w1_b",
    ".hada_w2_a": "hada_w2_a",
    ".hada_w2_b": "hada_w2_b",
    ".hada_t1": "hada_t1",
    ".hada_t2": "hada_t2",
    ".lokr_w1": "lokr_w1",
    ".lokr_w1_a": "lokr_w1_a",
    ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2": "lokr_w2",
    ".lokr_w2_a": "lokr_w2_a",
    ".lokr_w2_b": "lokr_w2_b",
    ".lokr_t2": "lokr_t2",
    ".diff": "diff",
    ".diff_b": "diff_b",
    ".dora_scale": "dora_scale",
    ".alpha": "alpha",
}
# Roles of forms this patcher cannot apply, with what to call them in the error.
_UNSUPPORTED = {
    "hada_t1": "LoHa with CP decomposition (hada_t1/hada_t2)",
    "hada_t2": "LoHa with CP decomposition (hada_t1/hada_t2)",
    "lokr_t2": "LoKr with CP decomposition (lokr_t2)",
    "mid": "LoCon with a Tucker core (lora_mid)",
    "dora_scale": "DoRA (dora_scale)",
}
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

_Layer = TypeVar("_Layer", bound="PatchLayer")


@dataclass(frozen=True)
class PatchLayer:
    """One module's update: where it goes, and `update()` (ΔW in float32, any shape with the weight's size)."""

    target: str
    module: str
    underscored: bool

    def update(self, weight: float) -> torch.Tensor:
        raise NotImplementedError

    def bias_update(self, weight: float) -> torch.Tensor | None:
        return None

    def to(self: _Layer, device: torch.device | str) -> _Layer:
        """A copy with every tensor on `device`."""
        changes: dict[str, Any] = {
            field.name: value.to(device)
            for field in dataclasses.fields(self)
            if isinstance(value := getattr(self, field.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes)


def _scale(alpha: float | None, rank: int | None) -> float:
    return alpha / rank if alpha is not None and rank else 1.0


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.float().flatten(1) @ b.float().flatten(1)


@dataclass(frozen=True)
class LoRALayer(PatchLayer):
    """A low-rank update: `up @ down`."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def update(self, weight: float) -> torch.Tensor:
        return _product(self.up, self.down) * (_scale(self.alpha, self.rank) * weight)


@dataclass(frozen=True)
class LoHaLayer(PatchLayer):
    """LyCORIS LoHa: the Hadamard product of two low-rank products."""

    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    alpha: float | None

    def update(self, weight: float) -> torch.Tensor:
        rank = int(self.w1_b.shape[0])
        return _product(self.w1_a, self.w1_b) * _product(self.w2_a, self.w2_b) * (_scale(self.alpha, rank) * weight)


@dataclass(frozen=True)
class LoKrLayer(PatchLayer):
    """LyCORIS LoKr: the Kronecker product of two factors, each whole or a low-rank product."""

    w1: torch.Tensor | None
    w1_a: torch.Tensor | None
    w1_b: torch.Tensor | None
    w2: torch.Tensor | None
    w2_a: torch.Tensor | None
    w2_b: torch.Tensor | None
    alpha: float | None

    def update(self, weight: float) -> torch.Tensor:
        w1 = self.w1.float() if self.w1 is not None else _product(_given(self.w1_a), _given(self.w1_b))
        w2 = self.w2.float() if self.w2 is not None else _product(_given(self.w2_a), _given(self.w2_b))
        if w2.dim() == 4:
            # A whole conv factor [out, in, kh, kw]: w1 broadcasts over the kernel.
            w1 = w1[:, :, None, None]
        rank = next((int(t.shape[0]) for t in (self.w1_b, self.w2_b) if t is not None), None)
        return torch.kron(w1, w2) * (_scale(self.alpha, rank) * weight)


@dataclass(frozen=True)
class FullLayer(PatchLayer):
    """LyCORIS full fine-tune difference: ΔW itself, and optionally Δbias."""

    diff: torch.Tensor
    diff_b: torch.Tensor | None

    def update(self, weight: float) -> torch.Tensor:
        return self.diff.float() * weight

    def bias_update(self, weight: float) -> torch.Tensor | None:
        return None if self.diff_b is None else self.diff_b.float() * weight


def _given(tensor: torch.Tensor | None) -> torch.Tensor:
    assert tensor is not None  # the parser only builds a factor from both halves
    return tensor


@dataclass(frozen=True)
class LoRAModel:
    """The layers of one LoRA/LyCORIS file."""

    name: str
    layers: tuple[PatchLayer, ...]

    def targets(self) -> set[str]:
        return {layer.target for layer in self.layers}

    def to(self, device: torch.device | str) -> LoRAModel:
        return dataclasses.replace(self, layers=tuple(layer.to(device) for layer in self.layers))


def read_lora(path: str | Path, *, name: str | None = None) -> LoRAModel:
    """Parse a LoRA `.safetensors` file; GenerationFailed when it cannot be read or holds no layer to apply."""
    label = name or Path(path).stem
    try:
        state = load_file(str(path), device="cpu")
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise GenerationFailed(f"Could not read LoRA {label}: {exc}", error_type="ModelLoadError") from exc
    layers = parse_lora_state_dict(state, name=label)
    if not layers:
        raise GenerationFailed(f"LoRA {label} holds no LoRA layers this server can apply", error_type="ModelLoadError")
    return LoRAModel(name=label, layers=tuple(layers))


def parse_lora_state_dict(state: Mapping[str, torch.Tensor], *, name: str = "LoRA") -> list[PatchLayer]:
    """The updates of a LoRA/LyCORIS state dict in any of the layouts in this module's docstring.
    GenerationFailed (UnsupportedLoRA) for a form this patcher cannot apply; unknown keys are skipped."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    skipped = 0
    for key, tensor in state.items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            skipped += 1
            continue
        groups.setdefault(key[: -len(suffix)], {})[_SUFFIXES[suffix]] = tensor
    layers: list[PatchLayer] = []
    for base, parts in groups.items():
        unsupported = next((_UNSUPPORTED[role] for role in parts if role in _UNSUPPORTED), None)
        if unsupported is not None:
            raise GenerationFailed(
                f"LoRA {name} uses {unsupported} in {base}, which this server cannot apply",
                error_type="UnsupportedLoRA",
            )
        located = _locate(base)
        layer = _layer(located, parts) if located is not None else None
        if layer is None:
            skipped += len(parts)
        else:
            layers.append(layer)
    if skipped:
        logger.warning("LoRA %s: skipped %d entries of an unknown layout", name, skipped)
    return layers


def _layer(located: tuple[str, str, bool], parts: Mapping[str, torch.Tensor]) -> PatchLayer | None:
    target, module, underscored = located
    where: dict[str, Any] = {"target": target, "module": module, "underscored": underscored}
    alpha_tensor = parts.get("alpha")
    alpha = float(alpha_tensor.item()) if alpha_tensor is not None else None
    if "down" in parts and "up" in parts:
        return LoRALayer(**where, down=parts["down"], up=parts["up"], alpha=alpha)
    hada = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    if all(role in parts for role in hada):
        return LoHaLayer(
            **where,
            w1_a=parts["hada_w1_a"],
            w1_b=parts["hada_w1_b"],
            w2_a=parts["hada_w2_a"],
            w2_b=parts["hada_w2_b"],
            alpha=alpha,
        )
    has_w1 = "lokr_w1" in parts or ("lokr_w1_a" in parts and "lokr_w1_b" in parts)
    has_w2 = "lokr_w2" in parts or ("lokr_w2_a" in parts and "lokr_w2_b" in parts)
    if has_w1 and has_w2:
        return LoKrLayer(
            **where,
            w1=parts.get("lokr_w1"),
            w1_a=parts.get("lokr_w1_a"),
            w1_b=parts.get("lokr_w1_b"),
            w2=parts.get("lokr_w2"),
            w2_a=parts.get("lokr_w2_a"),
            w2_b=parts.get("lokr_w2_b"),
            alpha=alpha,
        )
    if "diff" in parts:
        return FullLayer(**where, diff=parts["diff"], diff_b=parts.get("diff_b"))
    return None


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


def _apply(
    lora: LoRAModel, param: Any, update: torch.Tensor, module: str, saved: dict[int, tuple[torch.Tensor, torch.Tensor]]
) -> None:
    if not isinstance(param, torch.Tensor) or param.numel() != update.numel():
        raise GenerationFailed(
            f"LoRA {lora.name} does not fit layer {module} of this model", error_type="IncompatibleLoRA"
        )
    if id(param) not in saved:
        saved[id(param)] = (param, param.detach().clone())
    delta = update.reshape(param.shape).to(device=param.device)
    param.copy_((param.float() + delta).to(param.dtype))


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
                    module = index.get(layer.module) if layer.target == target else None
                    if module is None:
                        continue
                    _apply(lora, module.weight, layer.update(weight), layer.module, saved)
                    bias = layer.bias_update(weight)
                    if bias is not None:
                        _apply(lora, module.bias, bias, f"{layer.module} (bias)", saved)
                    matched += 1
                if matched == 0 and target in lora.targets():
                    raise GenerationFailed(
                        f"LoRA {lora.name} matches no layer of this {target}; is it for another model family?",
                        error_type="IncompatibleLoRA",
                    )
        yield model
    finally:
        with torch.no_grad():
            for param, original in saved.values():
                param.copy_(original)
