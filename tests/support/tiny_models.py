"""Tiny models on disk for tests: each builder writes into `folder` and returns the model's path (a diffusers
folder or a single file). Random weights with real layouts, built in well under a second, same seed same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file

from serve_app.inference.tiny import (
    build_tiny_controlnet,
    build_tiny_esrgan,
    build_tiny_sd15,
    build_tiny_sd15_inpaint,
    build_tiny_sdxl,
    build_tiny_sdxl_refiner,
    build_tiny_vae,
    save_diffusers,
    save_single_file,
)

# The attention projections most real LoRAs patch.
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_RANK = 4
# What kohya's and the modelspec metadata call each base, so probing tells tiny LoRAs apart (their widths cannot).
_ARCHITECTURES = {"sd-1": "stable-diffusion-v1/lora", "sdxl": "stable-diffusion-xl-v1-base/lora"}
# The widths of the tiny SDXL text encoders (CLIP-L, OpenCLIP-G stand-ins) per tiny CLIP-L width.
_SDXL_G_PER_L = 2


def sd1_folder(folder: Path, *, name: str = "tiny-sd1", seed: int = 0) -> Path:
    return save_diffusers(build_tiny_sd15(seed), folder / name)


def sdxl_folder(folder: Path, *, name: str = "tiny-sdxl", seed: int = 0) -> Path:
    return save_diffusers(build_tiny_sdxl(seed), folder / name)


def sd1_single_file(folder: Path, *, name: str = "tiny-sd1-file", seed: int = 0) -> Path:
    """An LDM-layout `<name>.safetensors` plus the `<name>.config/` folder it loads with offline."""
    path = folder / f"{name}.safetensors"
    save_single_file(build_tiny_sd15(seed), path)
    return path


def sdxl_single_file(folder: Path, *, name: str = "tiny-sdxl-file", seed: int = 0) -> Path:
    path = folder / f"{name}.safetensors"
    save_single_file(build_tiny_sdxl(seed), path)
    return path


def sd1_inpaint_folder(folder: Path, *, name: str = "tiny-sd1-inpaint", seed: int = 0) -> Path:
    """The tiny SD 1.5 pipeline as an inpainting model: its UNet takes 9 channels (latents + mask + masked image)."""
    return save_diffusers(build_tiny_sd15_inpaint(seed), folder / name)


def sd1_inpaint_single_file(folder: Path, *, name: str = "tiny-sd1-inpaint-file", seed: int = 0) -> Path:
    path = folder / f"{name}.safetensors"
    save_single_file(build_tiny_sd15_inpaint(seed), path)
    return path


def sdxl_refiner_folder(folder: Path, *, name: str = "tiny-sdxl-refiner", seed: int = 0) -> Path:
    """A tiny SDXL refiner (OpenCLIP-style encoder only, aesthetic-score time ids) as a diffusers folder."""
    return save_diffusers(build_tiny_sdxl_refiner(seed), folder / name)


def sdxl_refiner_single_file(folder: Path, *, name: str = "tiny-sdxl-refiner-file", seed: int = 0) -> Path:
    path = folder / f"{name}.safetensors"
    save_single_file(build_tiny_sdxl_refiner(seed), path)
    return path


def controlnet_folder(
    folder: Path, *, base: Literal["sd-1", "sdxl"] = "sd-1", name: str | None = None, seed: int = 0
) -> Path:
    """A ControlNet diffusers folder (`config.json` + safetensors) for the tiny `base` UNet (built with seed 0,
    the tiny main models' default)."""
    pipe = build_tiny_sd15() if base == "sd-1" else build_tiny_sdxl()
    controlnet = build_tiny_controlnet(pipe.unet, seed=seed)
    path = folder / (name or f"tiny-controlnet-{base}")
    controlnet.save_pretrained(path, safe_serialization=True)
    return path


def vae_folder(folder: Path, *, name: str = "tiny-vae", seed: int = 1, scaling_factor: float = 0.18215) -> Path:
    return build_tiny_vae(folder / name, seed=seed, scaling_factor=scaling_factor)


def peft_lora(folder: Path, *, base: Literal["sd-1", "sdxl"] = "sd-1", seed: int = 0, name: str | None = None) -> Path:
    """A LoRA for the tiny `base` UNet made by peft itself, saved in the diffusers/peft layout
    (`unet.<module>.lora_A.weight` [rank, in], `unet.<module>.lora_B.weight` [out, rank]) as `.safetensors`."""
    pipe = build_tiny_sd15() if base == "sd-1" else build_tiny_sdxl()
    unet = pipe.unet
    # lora_alpha == r makes peft's scale 1, which is what readers assume for a file without `.alpha` entries.
    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=LORA_TARGETS, init_lora_weights=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, unet)
        with torch.no_grad():
            for module_name, param in unet.named_parameters():
                # peft starts lora_B at zero (a no-op adapter); a test LoRA must change the output.
                if ".lora_B." in module_name:
                    param.copy_(torch.randn_like(param) / LORA_RANK**0.5)
    state = {f"unet.{key}": value.contiguous() for key, value in get_peft_model_state_dict(unet).items()}
    path = folder / f"{name or f'tiny-lora-{base}-{seed}'}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    # One metadata entry only: safetensors writes several in hash-map order, and then equal seeds would not give
    # equal bytes (nor equal model hashes).
    save_file(state, str(path), metadata={"modelspec.architecture": _ARCHITECTURES[base]})
    return path


def textual_inversion(
    folder: Path,
    *,
    name: str,
    fmt: Literal["a1111", "diffusers", "sdxl"] = "a1111",
    vectors: int = 2,
    width: int = 32,
    seed: int = 0,
) -> Path:
    """A textual inversion of `vectors` token vectors `width` wide (32: the tiny CLIP's width):
    a1111 → `<name>.pt` {"string_to_param": {"*": [vectors, width]}, ...} as A1111 trains them;
    diffusers → `<name>.safetensors` {"<name>": [vectors, width]};
    sdxl → `<name>.safetensors` {"clip_l": [vectors, width], "clip_g": [vectors, 2 * width]} (the tiny SDXL's)."""
    generator = torch.Generator().manual_seed(seed)

    def vector(dims: int) -> torch.Tensor:
        return torch.randn(vectors, dims, generator=generator)

    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "a1111":
        path = folder / f"{name}.pt"
        torch.save(
            {
                "string_to_token": {"*": 265},
                "string_to_param": {"*": vector(width)},
                "name": name,
                "step": 0,
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
            },
            path,
        )
        return path
    path = folder / f"{name}.safetensors"
    if fmt == "diffusers":
        save_file({name: vector(width)}, str(path))
    else:
        save_file({"clip_l": vector(width), "clip_g": vector(width * _SDXL_G_PER_L)}, str(path))
    return path


def esrgan(folder: Path, *, name: str = "RealESRGAN_x4plus", scale: int = 4, suffix: str = ".safetensors",
           seed: int = 0) -> Path:  # fmt: skip
    """A tiny Real-ESRGAN-layout upscaler (`<name><suffix>`, .safetensors or .pth) that enlarges `scale`× (4, 2
    or 1), recognised by the probe as spandrel_image_to_image and loaded by spandrel."""
    return build_tiny_esrgan(folder / f"{name}{suffix}", scale=scale, seed=seed)
