"""The demo LoRA and VAE written next to the demo models are usable with demo-sd15."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.nodes import LoRAWeight, ModelComponents, decode
from serve_app.inference.tiny import DEMO_LORA, DEMO_VAE, ensure_demo_models
from tests.inference.nodes.conftest import generate_latents


def test_demo_lora_and_vae_load_and_change_the_output(tmp_path: Path) -> None:
    sd15, _ = ensure_demo_models(tmp_path)
    lora_path, vae_path = tmp_path / DEMO_LORA, tmp_path / DEMO_VAE
    assert lora_path == tmp_path / "loras" / "demo-lora-sd15.safetensors"
    assert (vae_path / "config.json").is_file() and vae_path.parent.name == "vae"
    mtime = lora_path.stat().st_mtime_ns
    ensure_demo_models(tmp_path)
    assert lora_path.stat().st_mtime_ns == mtime
    # No staging leftovers.
    assert [p.name for p in (tmp_path / "loras").iterdir()] == ["demo-lora-sd15.safetensors"]

    components = ModelComponents(ModelCache(), device="cpu", dtype=torch.float32)
    main = ModelSpec(name="demo-sd15", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path=str(sd15))
    lora = ModelSpec(
        name="demo-lora-sd15",
        family=ModelFamily.SD1,
        format=ModelFormat.LYCORIS,
        path=str(lora_path),
        type=ModelType.LORA,
    )
    vae = ModelSpec(
        name="demo-vae-sd15",
        family=ModelFamily.SD1,
        format=ModelFormat.DIFFUSERS,
        path=str(vae_path),
        type=ModelType.VAE,
    )

    plain = generate_latents(components, main)
    patched = generate_latents(components, main, loras=[LoRAWeight(lora, 0.75)])

    assert (plain - patched).abs().mean() > 1e-3
    own = np.asarray(decode(components.vae(main), plain), dtype=np.int16)
    other = np.asarray(decode(components.vae(vae), plain), dtype=np.int16)
    assert np.abs(own - other).mean() > 5
