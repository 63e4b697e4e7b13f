"""Prompt encoding as InvokeAI's `compel` and `sdxl_compel_prompt` nodes do it, without compel's weighting syntax.

Long prompts are not truncated: the tokens are cut into 75-token chunks, each wrapped in BOS/EOS and padded to 77,
encoded separately and concatenated along the sequence (compel's `truncate_long_prompts=False`). The prompt text is
used as is: compel's `(word)1.2` / `word+` syntax is not parsed (the package is not installed).

Textual-inversion triggers (`<name>`, see `embeddings.ti_patched`) in the text become the token ids the text
encoder's `triggers` map them to; the rest of the text is tokenized as usual around them.

All returned tensors are float32 on the CPU, so conditionings can sit in memory between nodes on any device.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from serve_app.domain.errors import InvalidRequest
from serve_app.inference.nodes.components import TextEncoder


@dataclass(frozen=True)
class Conditioning:
    """What a prompt node outputs: `embeds` [1, 77·k, D]; SDXL adds `pooled` [1, P] and `add_time_ids` [1, 6]."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    add_time_ids: torch.Tensor | None = None

    @property
    def is_sdxl(self) -> bool:
        return self.pooled is not None


@torch.no_grad()
def encode_prompt(text_encoder: TextEncoder, prompt: str, *, skipped_layers: int = 0) -> Conditioning:
    """SD 1.x/2.x conditioning (`compel` node) with CLIP skip: `skipped_layers` = N takes the hidden state N layers
    before the last and passes it through the final layer norm, as InvokeAI's `clip_skip` node (0 = last layer)."""
    _check_skip(text_encoder, skipped_layers)
    hidden, _ = _encode(text_encoder, prompt, layer=-(1 + skipped_layers), normalize=True)
    return Conditioning(embeds=hidden)


@torch.no_grad()
def encode_sdxl_prompt(
    text_encoders: Sequence[TextEncoder],
    prompt: str,
    style: str | None = None,
    *,
    original_width: int = 1024,
    original_height: int = 1024,
    crop_top: int = 0,
    crop_left: int = 0,
    target_width: int = 1024,
    target_height: int = 1024,
    skipped_layers: int = 0,
) -> Conditioning:
    """SDXL conditioning (`sdxl_compel_prompt` node): `prompt` through CLIP-L, `style` (None = `prompt`) through
    OpenCLIP-G; each encoder's penultimate hidden state without the final norm, concatenated along features; the
    pooled embedding from the second encoder's projection; size/crop micro-conditioning in `add_time_ids`
    (original (h, w), crop (top, left), target (h, w)). An empty text gives zeros for its encoder, as InvokeAI."""
    if len(text_encoders) != 2:
        raise InvalidRequest("SDXL prompts need the model's two text encoders", field="clip2")
    first, second = text_encoders
    for encoder in text_encoders:
        _check_skip(encoder, skipped_layers + 1)
    layer = -(2 + skipped_layers)
    texts = (prompt, prompt if style is None else style)
    chunks = max(_chunk_count(first, texts[0]), _chunk_count(second, texts[1]))
    hidden_1, _ = _encode(first, texts[0], layer=layer, normalize=False, chunks=chunks, zero_on_empty=True)
    hidden_2, pooled = _encode(second, texts[1], layer=layer, normalize=False, chunks=chunks, zero_on_empty=True)
    assert pooled is not None
    time_ids = [original_height, original_width, crop_top, crop_left, target_height, target_width]
    return Conditioning(
        embeds=torch.cat([hidden_1, hidden_2], dim=-1),
        pooled=pooled,
        add_time_ids=torch.tensor([time_ids], dtype=torch.float32),
    )


@torch.no_grad()
def encode_sdxl_refiner_prompt(
    text_encoder_2: TextEncoder,
    style: str,
    *,
    original_width: int = 1024,
    original_height: int = 1024,
    crop_top: int = 0,
    crop_left: int = 0,
    aesthetic_score: float = 6.0,
    skipped_layers: int = 0,
) -> Conditioning:
    """SDXL refiner conditioning (`sdxl_refiner_compel_prompt` node): `style` through OpenCLIP-G alone (its
    penultimate hidden state without the final norm, and the pooled projection); `add_time_ids` are the refiner's
    five numbers, original (h, w), crop (top, left) and the aesthetic score. An empty text is encoded, not
    zeroed, as InvokeAI does for the refiner."""
    _check_skip(text_encoder_2, skipped_layers + 1)
    hidden, pooled = _encode(text_encoder_2, style, layer=-(2 + skipped_layers), normalize=False)
    assert pooled is not None
    time_ids = [original_height, original_width, crop_top, crop_left, aesthetic_score]
    return Conditioning(embeds=hidden, pooled=pooled, add_time_ids=torch.tensor([time_ids], dtype=torch.float32))


def _check_skip(text_encoder: TextEncoder, skip: int) -> None:
    layers = int(text_encoder.encoder.config.num_hidden_layers)
    if skip < 0 or skip >= layers:
        raise InvalidRequest(
            f"skipped_layers must be between 0 and {layers - 1} for this text encoder, got {skip}",
            field="skipped_layers",
        )


def _token_ids(text_encoder: TextEncoder, text: str) -> list[int]:
    """The text's token ids, each textual-inversion trigger replaced by the ids of its vectors."""
    tokenizer, triggers = text_encoder.tokenizer, text_encoder.triggers
    pieces = re.split(f"({'|'.join(map(re.escape, triggers))})", text) if triggers else [text]
    ids: list[int] = []
    for piece in pieces:
        if piece in triggers:
            ids.extend(triggers[piece])
        elif piece:
            ids.extend(tokenizer(piece, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])
    return ids


def _token_chunks(text_encoder: TextEncoder, text: str) -> list[list[int]]:
    ids = _token_ids(text_encoder, text)
    body = int(text_encoder.tokenizer.model_max_length) - 2
    return [ids[start : start + body] for start in range(0, len(ids), body)] or [[]]


def _chunk_count(text_encoder: TextEncoder, text: str) -> int:
    return len(_token_chunks(text_encoder, text))


def _encode(
    text_encoder: TextEncoder,
    text: str,
    *,
    layer: int,
    normalize: bool,
    chunks: int = 0,
    zero_on_empty: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    tokenizer, encoder = text_encoder.tokenizer, text_encoder.encoder
    config = encoder.config
    projected = hasattr(config, "projection_dim") and hasattr(encoder, "text_projection")
    token_chunks = _token_chunks(text_encoder, text)
    token_chunks += [[]] * (chunks - len(token_chunks))
    length = int(tokenizer.model_max_length)
    if zero_on_empty and text == "":
        hidden = torch.zeros(1, length * len(token_chunks), int(config.hidden_size))
        pooled = torch.zeros(1, int(config.projection_dim)) if projected else None
        return hidden, pooled
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [
        ([tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id] + [pad] * length)[:length] for chunk in token_chunks
    ]
    ids = torch.tensor(rows, dtype=torch.long, device=encoder.device)
    output = encoder(ids, output_hidden_states=True)
    if layer == -1 and normalize:
        hidden = output.last_hidden_state
    else:
        hidden = output.hidden_states[layer]
        if normalize:
            hidden = _final_layer_norm(encoder)(hidden)
    hidden = hidden.reshape(1, -1, hidden.shape[-1]).float().cpu()
    pooled = _pooled(text_encoder, output, ids)[:1].float().cpu() if projected else None
    return hidden, pooled


def _pooled(text_encoder: TextEncoder, output: Any, ids: torch.Tensor) -> torch.Tensor:
    if not text_encoder.triggers:
        return output.text_embeds  # type: ignore[no-any-return]
    # Encoders with the legacy `eos_token_id` 2 (SDXL's OpenCLIP-G among them) pool at the highest token id,
    # which with embedding ids appended past the vocabulary is no longer the EOS: pool at the first EOS, as
    # newer configs do, which is the same place whenever no embedding is applied.
    encoder = text_encoder.encoder
    eos = (ids == text_encoder.tokenizer.eos_token_id).int().argmax(dim=-1)
    last = output.last_hidden_state
    return encoder.text_projection(last[torch.arange(last.shape[0], device=last.device), eos])  # type: ignore[no-any-return]


def _final_layer_norm(encoder: Any) -> Any:
    norm = getattr(encoder, "final_layer_norm", None)
    if norm is None:
        norm = encoder.text_model.final_layer_norm
    return norm
