"""Diffusion operations for InvokeAI-style node graphs (text encode, noise, denoise, VAE, masks), schema-free."""

from serve_app.inference.nodes.components import LoRAWeight, ModelComponents, TextEncoder
from serve_app.inference.nodes.images import RESAMPLE_MODES, resize
from serve_app.inference.nodes.latents import DenoiseMask, decode, denoise, encode, make_noise, preview
from serve_app.inference.nodes.masks import COHERENCE_MODES, create_denoise_mask, create_gradient_mask
from serve_app.inference.nodes.prompts import Conditioning, encode_prompt, encode_sdxl_prompt

__all__ = [
    "COHERENCE_MODES",
    "RESAMPLE_MODES",
    "Conditioning",
    "DenoiseMask",
    "LoRAWeight",
    "ModelComponents",
    "TextEncoder",
    "create_denoise_mask",
    "create_gradient_mask",
    "decode",
    "denoise",
    "encode",
    "encode_prompt",
    "encode_sdxl_prompt",
    "make_noise",
    "preview",
    "resize",
]
