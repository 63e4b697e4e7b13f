"""Textual-inversion embeddings: read from their file formats, and applied to a text encoder for one call.

Formats read (pickles only through `torch.load(weights_only=True)`, which refuses anything but tensors and
plain containers):
- A1111 `.pt`/`.safetensors`: `string_to_param` {'*': [N, D]}, or `emb_params` [N, D];
- diffusers `learned_embeds.{bin,safetensors}`: {token: [D] or [N, D]};
- SDXL: {clip_l: [N, 768], clip_g: [N, 1280]}, one set of vectors per text encoder;
- a folder holding one of these (`learned_embeds.*` first).

Applying, like InvokeAI's TI patcher but without touching the tokenizer: the text encoder's input embedding
table is swapped for one with N rows appended (the vectors), and `<name>` in a prompt stands for those N new
token ids; on exit the original table (the same module object) is put back, so the encoder is bit-for-bit
what it was. The tokenizer is never changed, so no copy of it is needed.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from serve_app.domain.errors import GenerationFailed

_FOLDER_FILES = ("learned_embeds.safetensors", "learned_embeds.bin")
_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".pth")
_SDXL_KEYS = ("clip_l", "clip_g")


@dataclass(frozen=True)
class TextualInversion:
    """One embedding: `vectors` holds one [N, D] tensor per text-encoder width it was trained for (one for
    SD 1.x/2.x; CLIP-L's then OpenCLIP-G's for SDXL)."""

    name: str
    vectors: tuple[torch.Tensor, ...]

    def for_encoder(self, width: int, index: int = 0) -> torch.Tensor:
        """The vectors for a text encoder of `width` (`index`: which of the model's encoders it is, to choose
        when two sets have the same width). GenerationFailed naming the embedding when none fits."""
        if index < len(self.vectors) and self.vectors[index].shape[-1] == width:
            return self.vectors[index]
        for vectors in self.vectors:
            if vectors.shape[-1] == width:
                return vectors
        widths = ", ".join(str(v.shape[-1]) for v in self.vectors)
        raise GenerationFailed(
            f"Embedding {self.name} has token width {widths}, but this text encoder's is {width}; "
            "it was trained for another model",
            error_type="IncompatibleEmbedding",
        )


def read_embedding(path: str | Path, *, name: str | None = None) -> TextualInversion:
    """Parse an embedding file or folder; GenerationFailed (ModelLoadError) when it holds no embedding."""
    label = name or Path(path).stem
    try:
        state = _load(Path(path))
        vectors = _vectors(state)
    except (
        OSError, ValueError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError, zipfile.BadZipFile,
        SafetensorError,
    ) as exc:  # fmt: skip
        raise GenerationFailed(f"Could not read embedding {label}: {exc}", error_type="ModelLoadError") from exc
    return TextualInversion(name=label, vectors=vectors)


def _load(path: Path) -> Mapping[str, Any]:
    if path.is_dir():
        candidates = [path / name for name in _FOLDER_FILES if (path / name).is_file()]
        candidates += sorted(p for p in path.iterdir() if p.suffix in _FILE_SUFFIXES and p.is_file())
        if not candidates:
            raise ValueError(f"no embedding file in folder {path.name}")
        path = candidates[0]
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path.name} holds a {type(loaded).__name__}, not a dict of tensors")
    return loaded


def _vectors(state: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    if "string_to_param" in state:
        params = state["string_to_param"]
        tensors: tuple[Any, ...] = (params["*"] if "*" in params else next(iter(params.values())),)
    elif "emb_params" in state:
        tensors = (state["emb_params"],)
    elif any(key in state for key in _SDXL_KEYS):
        tensors = tuple(state[key] for key in _SDXL_KEYS if key in state)
    else:
        found = [value for value in state.values() if isinstance(value, torch.Tensor)]
        if len(found) != 1:
            raise ValueError(f"expected one embedding tensor, found {len(found)} ({', '.join(list(state)[:5])})")
        tensors = (found[0],)
    result = []
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.dim() not in (1, 2):
            raise ValueError("embedding vectors must be a float tensor of shape [D] or [N, D]")
        result.append(tensor.detach().reshape(-1, tensor.shape[-1]))
    return tuple(result)


@contextmanager
def ti_patched(
    encoder: Any, embeddings: Sequence[tuple[str, TextualInversion]], *, index: int = 0
) -> Iterator[dict[str, tuple[int, ...]]]:
    """Apply `(trigger, embedding)` pairs to text encoder `encoder` (the model's `index`-th) until the block
    exits; yield trigger -> the token ids it now stands for."""
    if not embeddings:
        yield {}
        return
    original = encoder.get_input_embeddings()
    width = int(original.weight.shape[1])
    triggers: dict[str, tuple[int, ...]] = {}
    rows = [original.weight.detach()]
    next_id = int(original.weight.shape[0])
    for trigger, embedding in embeddings:
        vectors = embedding.for_encoder(width, index).to(device=original.weight.device, dtype=original.weight.dtype)
        triggers[trigger] = tuple(range(next_id, next_id + vectors.shape[0]))
        next_id += vectors.shape[0]
        rows.append(vectors)
    grown = torch.nn.Embedding(next_id, width, device=original.weight.device, dtype=original.weight.dtype)
    with torch.no_grad():
        grown.weight.copy_(torch.cat(rows))
    grown.requires_grad_(original.weight.requires_grad)
    encoder.set_input_embeddings(grown)
    try:
        yield triggers
    finally:
        encoder.set_input_embeddings(original)
