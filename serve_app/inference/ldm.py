"""Diffusers state dicts renamed to the original latent-diffusion ("CompVis"/LDM) single-file layout."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]

# Sub-module names inside a ResNet block: diffusers name -> LDM name.
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPEN_CLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_CLIP_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def unet_to_ldm(unet: Any) -> StateDict:
    """`model.diffusion_model.*` keys (without that prefix) for an SD1/SD2/SDXL UNet2DConditionModel."""
    per_block = unet.config.layers_per_block
    if not isinstance(per_block, int):
        raise ValueError("only a uniform `layers_per_block` has an LDM layout")
    stride = per_block + 1
    prefixes: dict[str, tuple[str, Mapping[str, str] | None]] = {
        "time_embedding.linear_1.": ("time_embed.0.", None),
        "time_embedding.linear_2.": ("time_embed.2.", None),
        "add_embedding.linear_1.": ("label_emb.0.0.", None),
        "add_embedding.linear_2.": ("label_emb.0.2.", None),
        "conv_in.": ("input_blocks.0.0.", None),
        "conv_norm_out.": ("out.0.", None),
        "conv_out.": ("out.2.", None),
        "mid_block.resnets.0.": ("middle_block.0.", _UNET_RESNET),
        "mid_block.attentions.0.": ("middle_block.1.", None),
        "mid_block.resnets.1.": ("middle_block.2.", _UNET_RESNET),
    }
    # LDM numbers every layer of the encoder path in one flat list: block b, layer l is 1 + b*stride + l,
    # and a block's downsampler takes the slot after its last layer.
    for b, block in enumerate(unet.down_blocks):
        _check_layers(block, per_block, f"down_blocks.{b}")
        for layer in range(per_block):
            index = 1 + b * stride + layer
            prefixes[f"down_blocks.{b}.resnets.{layer}."] = (f"input_blocks.{index}.0.", _UNET_RESNET)
            prefixes[f"down_blocks.{b}.attentions.{layer}."] = (f"input_blocks.{index}.1.", None)
        prefixes[f"down_blocks.{b}.downsamplers.0.conv."] = (f"input_blocks.{1 + b * stride + per_block}.0.op.", None)
    for b, block in enumerate(unet.up_blocks):
        _check_layers(block, stride, f"up_blocks.{b}")
        for layer in range(stride):
            index = b * stride + layer
            prefixes[f"up_blocks.{b}.resnets.{layer}."] = (f"output_blocks.{index}.0.", _UNET_RESNET)
            prefixes[f"up_blocks.{b}.attentions.{layer}."] = (f"output_blocks.{index}.1.", None)
        # The upsampler follows the last layer's attention when the block has one.
        slot = 2 if hasattr(block, "attentions") else 1
        prefixes[f"up_blocks.{b}.upsamplers.0.conv."] = (f"output_blocks.{b * stride + per_block}.{slot}.conv.", None)
    return _rename(unet.state_dict(), prefixes)


def vae_to_ldm(vae: Any) -> StateDict:
    """`first_stage_model.*` keys (without that prefix) for an AutoencoderKL."""
    prefixes: dict[str, tuple[str, Mapping[str, str] | None]] = {
        "quant_conv.": ("quant_conv.", None),
        "post_quant_conv.": ("post_quant_conv.", None),
    }
    for part in ("encoder", "decoder"):
        prefixes[f"{part}.conv_in."] = (f"{part}.conv_in.", None)
        prefixes[f"{part}.conv_out."] = (f"{part}.conv_out.", None)
        prefixes[f"{part}.conv_norm_out."] = (f"{part}.norm_out.", None)
        prefixes[f"{part}.mid_block.attentions.0."] = (f"{part}.mid.attn_1.", _VAE_ATTENTION)
        for k in range(len(getattr(vae, part).mid_block.resnets)):
            prefixes[f"{part}.mid_block.resnets.{k}."] = (f"{part}.mid.block_{k + 1}.", _VAE_RESNET)
    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = (f"encoder.down.{i}.block.{j}.", _VAE_RESNET)
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = (f"encoder.down.{i}.downsample.conv.", None)
    # The LDM decoder numbers its up blocks from the lowest resolution upwards, diffusers the other way.
    count = len(vae.decoder.up_blocks)
    for i, block in enumerate(vae.decoder.up_blocks):
        level = count - 1 - i
        for j in range(len(block.resnets)):
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = (f"decoder.up.{level}.block.{j}.", _VAE_RESNET)
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = (f"decoder.up.{level}.upsample.conv.", None)
    renamed = _rename(vae.state_dict(), prefixes)
    # LDM's attention projections are 1x1 convolutions, diffusers' are linear layers.
    for key, tensor in renamed.items():
        if ".mid.attn_1." in key and key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            renamed[key] = tensor[:, :, None, None]
    return renamed


def clip_to_ldm(text_encoder: Any) -> StateDict:
    """A CLIPTextModel in the Hugging Face layout LDM keeps under `*.transformer.` (keys start `text_model.`)."""
    # transformers 5 dropped the `text_model.` level from CLIPTextModel; checkpoints still have it.
    return {
        (key if key.startswith("text_model.") else f"text_model.{key}"): tensor
        for key, tensor in text_encoder.state_dict().items()
    }


def open_clip_to_ldm(text_encoder: Any) -> StateDict:
    """A CLIPTextModelWithProjection in OpenCLIP's layout (SDXL's `conditioner.embedders.1.model.*`)."""
    source = {
        (key if key.startswith(("text_model.", "text_projection.")) else f"text_model.{key}"): tensor
        for key, tensor in text_encoder.state_dict().items()
    }
    result: StateDict = {}
    # OpenCLIP packs q, k and v into one in_proj tensor per layer, in that order.
    packed: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in source.items():
        if key == "text_projection.weight":
            # OpenCLIP multiplies `x @ text_projection`; a Linear layer stores the transpose.
            result["text_projection"] = tensor.T.contiguous()
            continue
        if key in _OPEN_CLIP_TOP:
            result[_OPEN_CLIP_TOP[key]] = tensor
            continue
        match = _CLIP_LAYER.match(key)
        if match is None:
            raise ValueError(f"no OpenCLIP name for text encoder key {key}")
        layer, module, kind = int(match[1]), match[2], match[3]
        if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            packed.setdefault((layer, kind), {})[module[-6]] = tensor
        elif module in _OPEN_CLIP_LAYER:
            result[f"transformer.resblocks.{layer}.{_OPEN_CLIP_LAYER[module]}.{kind}"] = tensor
        else:
            raise ValueError(f"no OpenCLIP name for text encoder key {key}")
    for (layer, kind), parts in packed.items():
        result[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return result


def with_prefix(prefix: str, state: StateDict) -> StateDict:
    """Every key of `state` under `prefix`, as contiguous CPU tensors ready for safetensors."""
    return {f"{prefix}{key}": tensor.detach().to("cpu").contiguous() for key, tensor in state.items()}


def _check_layers(block: Any, expected: int, name: str) -> None:
    if len(block.resnets) != expected:
        raise ValueError(f"{name} has {len(block.resnets)} layers, the LDM layout needs {expected}")


def _rename(
    state: Mapping[str, torch.Tensor], prefixes: Mapping[str, tuple[str, Mapping[str, str] | None]]
) -> StateDict:
    # Longest prefix first, so `conv_out.` can never shadow a longer, more specific prefix.
    ordered = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)
    result: StateDict = {}
    for key, tensor in state.items():
        for source, (target, inner) in ordered:
            if key.startswith(source):
                result[target + _rename_inner(key[len(source) :], inner)] = tensor
                break
        else:
            raise ValueError(f"no LDM name for key {key}")
    return result


def _rename_inner(rest: str, inner: Mapping[str, str] | None) -> str:
    if inner is None:
        return rest
    for source, target in inner.items():
        if rest.startswith(source + "."):
            return target + rest[len(source) :]
    raise ValueError(f"no LDM name for sub-key {rest}")
