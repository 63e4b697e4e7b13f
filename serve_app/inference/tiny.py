"""Tiny random-weight SD 1.5 and SDXL pipelines with real geometry, built offline, and ways to save them."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.configuration_utils import ConfigMixin
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, PreTrainedModel

from serve_app.inference.ldm import clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm, with_prefix

DEMO_MODELS = ("demo-sd15", "demo-sdxl")
# Written next to the demo models, where the catalog looks for LoRAs and standalone VAEs.
DEMO_LORA = Path("loras") / "demo-lora-sd15.safetensors"
DEMO_VAE = Path("vae") / "demo-vae-sd15"
# Layers a tiny LoRA patches: the attention projections, as most real LoRAs do.
_LORA_UNET_LAYERS = (".to_q", ".to_k", ".to_v", ".to_out.0")
_LORA_TEXT_LAYERS = (".q_proj", ".k_proj", ".v_proj", ".out_proj")

# SD 1.5's training noise schedule (and SDXL's): every scheduler derived from it inherits these.
_SD_NOISE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}
_SDXL_SCHEDULER = {
    **_SD_NOISE,
    "interpolation_type": "linear",
    "timestep_spacing": "leading",
    "sample_max_value": 1.0,
}
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
# A few English merges so that common words become single tokens, as with a real CLIP vocabulary.
_MERGES = [
    ("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("i", "n"), ("e", "r"), ("o", "n"), ("r", "e"),
    ("a", "t"), ("e", "n"), ("o", "f</w>"),
]  # fmt: skip
_MAX_TOKENS = 77
# Torch's default generator is process-global: two threads building at once would interleave draws.
_BUILD_LOCK = threading.Lock()


def build_tiny_sd15(seed: int = 0) -> Any:
    """An SD 1.5-shaped pipeline (one CLIP text encoder, DDIM) of about a million random weights."""
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = _tokenizer()
        text_encoder = CLIPTextModel(_clip_config(tokenizer, hidden=32, act="quick_gelu"))
        unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
            sample_size=8,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
        )
        vae = _vae(scaling_factor=0.18215)
        scheduler = DDIMScheduler.from_config(_SD_NOISE)  # type: ignore[no-untyped-call]
        pipe: Any = StableDiffusionPipeline(  # type: ignore[no-untyped-call]
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sdxl(seed: int = 0) -> Any:
    """An SDXL-shaped pipeline (CLIP + OpenCLIP-style encoders, text_time conditioning, Euler)."""
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = _tokenizer()
        tokenizer_2 = _tokenizer()
        # The two encoders must differ in width, as in SDXL (768 and 1280): single-file loading tells
        # them apart by the size of their position embeddings.
        text_encoder = CLIPTextModel(_clip_config(tokenizer, hidden=32, act="quick_gelu"))
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, hidden=64, act="gelu", projection=32))
        # Six size/crop numbers as time ids; the UNet attends to both encoders' hidden states.
        unet = _sdxl_unet(cross_attention_dim=32 + 64, time_ids=6)
        vae = _vae(scaling_factor=0.13025)
        scheduler = EulerDiscreteScheduler.from_config(_SDXL_SCHEDULER)  # type: ignore[no-untyped-call]
        pipe: Any = StableDiffusionXLPipeline(  # type: ignore[no-untyped-call]
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            add_watermarker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sdxl_unet(*, cross_attention_dim: int, time_ids: int, time_dim: int = 8, pooled: int = 32) -> Any:
    """The tiny SDXL-shaped UNet (text_time conditioning): each time id is embedded in `time_dim` numbers and
    joined with the `pooled` text embedding of encoder 2."""
    return UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=cross_attention_dim,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=time_ids * time_dim + pooled,
    )


def build_tiny_sdxl_refiner(seed: int = 0) -> Any:
    """An SDXL-refiner-shaped pipeline: OpenCLIP-style `text_encoder_2` only (no CLIP-L), a UNet whose added
    embedding takes five time ids (original size, crop, aesthetic score) plus the pooled text embedding, the
    SDXL VAE scaling, `requires_aesthetics_score`, as stabilityai/stable-diffusion-xl-refiner-1.0."""
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer_2 = _tokenizer()
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, hidden=64, act="gelu", projection=32))
        # Five time ids (original h, w, crop top, left, aesthetic score); it attends to OpenCLIP's states alone.
        unet = _sdxl_unet(cross_attention_dim=64, time_ids=5)
        vae = _vae(scaling_factor=0.13025)
        scheduler = EulerDiscreteScheduler.from_config(_SDXL_SCHEDULER)  # type: ignore[no-untyped-call]
        pipe: Any = StableDiffusionXLImg2ImgPipeline(  # type: ignore[no-untyped-call]
            vae=vae,
            text_encoder=None,
            text_encoder_2=text_encoder_2,
            tokenizer=None,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False,
            add_watermarker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sd15_inpaint(seed: int = 0) -> Any:
    """The tiny SD 1.5 pipeline as an inpainting model: its UNet takes 9 channels (latents + mask + masked-image
    latents), with its own random weights (drawn from `seed` after the rest of the pipeline)."""
    pipe = build_tiny_sd15(seed)
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config({**pipe.unet.config, "in_channels": 9})  # type: ignore[no-untyped-call]
    components = {**pipe.components, "unet": unet}
    inpaint: Any = StableDiffusionInpaintPipeline(**components, requires_safety_checker=False)  # type: ignore[no-untyped-call]
    inpaint.set_progress_bar_config(disable=True)
    return inpaint


def save_diffusers(pipe: Any, folder: Path) -> Path:
    """Write `pipe` as a diffusers folder with safetensors weights."""
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def save_single_file(pipe: Any, path: Path) -> Path:
    """Write one LDM-layout `.safetensors` checkpoint plus its `<stem>.config/` folder; return that folder."""
    state = with_prefix("model.diffusion_model.", unet_to_ldm(pipe.unet))
    state.update(with_prefix("first_stage_model.", vae_to_ldm(pipe.vae)))
    if "text_encoder_2" in pipe.components and pipe.components.get("text_encoder") is None:
        # The SDXL refiner: OpenCLIP alone, as the first (and only) embedder.
        state.update(with_prefix("conditioner.embedders.0.model.", open_clip_to_ldm(pipe.text_encoder_2)))
    elif "text_encoder_2" in pipe.components:
        state.update(with_prefix("conditioner.embedders.0.transformer.", clip_to_ldm(pipe.text_encoder)))
        state.update(with_prefix("conditioner.embedders.1.model.", open_clip_to_ldm(pipe.text_encoder_2)))
    else:
        state.update(with_prefix("cond_stage_model.transformer.", clip_to_ldm(pipe.text_encoder)))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt"})
    return save_config_folder(pipe, path.with_name(f"{path.stem}.config"))


def save_config_folder(pipe: Any, folder: Path) -> Path:
    """A weightless diffusers folder: what `from_single_file(config=folder)` reads besides the checkpoint."""
    pipe.save_config(folder)
    for name, component in pipe.components.items():
        target = folder / name
        if isinstance(component, ConfigMixin):
            component.save_config(target)
        elif isinstance(component, PreTrainedModel):
            component.config.save_pretrained(target)
        elif component is not None:
            component.save_pretrained(target)
    return folder


def ensure_demo_models(models_dir: Path) -> list[Path]:
    """Build `demo-sd15` and `demo-sdxl` as diffusers folders in `models_dir` unless already there, plus a demo
    LoRA (`loras/demo-lora-sd15.safetensors`) and a demo VAE (`vae/demo-vae-sd15/`) for demo-sd15.
    Returns the main model folders."""
    models_dir.mkdir(parents=True, exist_ok=True)
    builders = {"demo-sd15": build_tiny_sd15, "demo-sdxl": build_tiny_sdxl}
    paths = []
    for name in DEMO_MODELS:
        target = models_dir / name
        if not target.exists():
            _build_atomically(target, builders[name])
        paths.append(target)
    lora = models_dir / DEMO_LORA
    if not lora.exists():
        lora.parent.mkdir(parents=True, exist_ok=True)
        staging = lora.with_name(f".{lora.name}.{os.getpid()}.{threading.get_ident()}")
        build_tiny_lora(build_tiny_sd15(), staging, seed=1)
        os.replace(staging, lora)
    vae = models_dir / DEMO_VAE
    if not vae.exists():
        vae.parent.mkdir(parents=True, exist_ok=True)
        _build_atomically(vae, lambda: _tiny_vae(seed=1))
    return paths


def build_tiny_lora(pipe_or_unet: Any, path: Path, *, rank: int = 4, seed: int = 0, scale: float = 1.0) -> Path:
    """Write a LoRA for a tiny pipeline (or a bare UNet) to `path`: random non-zero low-rank updates of every
    attention projection of the UNet and text encoder(s), in the peft/diffusers key layout
    (`unet.<module>.lora_A.weight` [rank, in], `lora_B.weight` [out, rank]; `text_encoder.`, `text_encoder_2.`).
    Written by hand (peft is not a dependency); `scale` multiplies the updates."""
    models = {"unet": pipe_or_unet.unet} if hasattr(pipe_or_unet, "unet") else {"unet": pipe_or_unet}
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(pipe_or_unet, name, None) is not None:
            models[name] = getattr(pipe_or_unet, name)
    state: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)
    for prefix, model in models.items():
        suffixes = _LORA_UNET_LAYERS if prefix == "unet" else _LORA_TEXT_LAYERS
        for module_name, module in model.named_modules():
            if not (isinstance(module, torch.nn.Linear) and module_name.endswith(suffixes)):
                continue
            out_features, in_features = module.weight.shape
            down = torch.randn(rank, in_features, generator=generator) / in_features**0.5
            up = torch.randn(out_features, rank, generator=generator) * scale / rank**0.5
            state[f"{prefix}.{module_name}.lora_A.weight"] = down.contiguous()
            state[f"{prefix}.{module_name}.lora_B.weight"] = up.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def build_tiny_vae(path: Path, *, seed: int = 1, scaling_factor: float = 0.18215) -> Path:
    """Write a standalone AutoencoderKL diffusers folder that fits the tiny SD 1.5 model (same geometry and
    scaling) but has its own random weights, so it decodes the same latents to different pixels."""
    return save_diffusers(_tiny_vae(seed=seed, scaling_factor=scaling_factor), path)


def _tiny_vae(*, seed: int, scaling_factor: float = 0.18215) -> Any:
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _vae(scaling_factor=scaling_factor)


def _build_atomically(target: Path, build: Callable[[], Any]) -> None:
    # A hidden sibling on the same filesystem, renamed into place: readers see nothing or everything.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_diffusers(build(), staging)
        os.rename(staging, target)
    except OSError:
        # Another process won the race (rename onto a non-empty folder fails); its copy is complete.
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _tokenizer() -> Any:
    vocab: dict[str, int] = {}
    symbols = _byte_symbols()
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[f"{symbol}</w>"] = len(vocab)
    for left, right in _MERGES:
        vocab.setdefault(left + right, len(vocab))
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    # transformers annotates `merges` as strings, but the tokenizers BPE model it feeds wants pairs.
    return CLIPTokenizer(vocab=vocab, merges=list(_MERGES), model_max_length=_MAX_TOKENS)  # type: ignore[arg-type]


def _byte_symbols() -> list[str]:
    # GPT-2/CLIP byte-level BPE: printable bytes stand for themselves, the rest map to code points from 256 up.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _clip_config(tokenizer: Any, *, hidden: int, act: str, projection: int | None = None) -> Any:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_MAX_TOKENS,
        hidden_act=act,
        projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vae(*, scaling_factor: float) -> Any:
    # Four blocks, three downsamples: the real factor-8 latent geometry, at a few thousand channels in all.
    return AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
    )


def build_tiny_controlnet(unet: Any, *, seed: int = 0) -> Any:
    """A ControlNet for a tiny UNet (SD 1.5 or SDXL): `ControlNetModel.from_unet`, its encoder copied from the
    UNet as in real training, its zero-initialised output convolutions given small random weights (a fresh
    ControlNet adds exactly nothing) and a control-image encoder strong enough that different control images
    give clearly different residuals."""
    from diffusers import ControlNetModel

    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
        embedding = controlnet.controlnet_cond_embedding
        with torch.no_grad():
            for conv in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
                conv.weight.normal_(0.0, 0.05)
                conv.bias.normal_(0.0, 0.05)
            # Variance-preserving weights and no biases in the image encoder: with torch's default init the
            # image's signal fades over its 8 layers and the biases alone would reach the UNet.
            for conv in (embedding.conv_in, *embedding.blocks, embedding.conv_out):
                torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                conv.bias.zero_()
            embedding.conv_out.weight.mul_(10.0)  # about as strong as the latents it is added to
    return controlnet


def build_tiny_esrgan(path: Path, *, scale: int = 2, features: int = 8, blocks: int = 1, seed: int = 0) -> Path:
    """Write a Real-ESRGAN-layout RRDBNet (`conv_first`, `body.<i>.rdb<j>.conv<k>`, `conv_body`, `conv_up1/2`,
    `conv_hr`, `conv_last`) with `features` channels and `blocks` RRDB blocks, as `.safetensors` or, for a
    `.pth` path, a torch pickle of the state dict. Scale 4 takes RGB; scale 2 (and 1) take the pixel-unshuffled
    image (12 or 48 channels), as RealESRGAN_x2plus does. Output biases sit at mid-grey, so even random weights
    give an image that is neither black nor white."""
    grow = 32  # Real-ESRGAN's growth channels; spandrel assumes them
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, inputs: int, outputs: int, bias: float = 0.0) -> None:
        std = (2.0 / (inputs * 9)) ** 0.5  # Kaiming: the signal keeps its size through the layers
        state[f"{name}.weight"] = torch.randn(outputs, inputs, 3, 3, generator=generator) * std
        state[f"{name}.bias"] = torch.full((outputs,), bias)

    conv("conv_first", 3 * unshuffle**2, features)
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for index in range(1, 5):
                conv(f"body.{block}.rdb{rdb}.conv{index}", features + (index - 1) * grow, grow)
            conv(f"body.{block}.rdb{rdb}.conv5", features + 4 * grow, features)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", features, 3, bias=0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pth":
        torch.save({"params_ema": state}, path)
    else:
        save_file(state, str(path))
    return path
