"""Single-file main checkpoint -> diffusers folder (InvokeAI's `PUT /api/v2/models/convert/{key}`).

Offline: the checkpoint's architecture comes from its local config folder (`spec.config_path`), never a hub.
The weights keep the checkpoint's floating-point dtype (an fp16 file gives an fp16 folder). The folder is
written under a hidden sibling name and renamed into place, so `dest` either appears complete or not at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from serve_app.domain.errors import Conflict, GenerationFailed, InvalidRequest
from serve_app.domain.models import ModelFormat, ModelSpec, ModelType
from serve_app.inference.loading import load_pipeline

logger = logging.getLogger(__name__)

_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


def convert_to_diffusers(spec: ModelSpec, dest: Path) -> None:
    """Write main model `spec` (a single-file checkpoint with a `config_path`) as a diffusers folder at `dest`
    with safetensors weights. InvalidRequest for anything else; Conflict when `dest` exists; GenerationFailed
    when the checkpoint cannot be read. Nothing is left behind on failure."""
    if spec.type is not ModelType.MAIN or spec.format is not ModelFormat.CHECKPOINT:
        raise InvalidRequest(f"Model {spec.name} is a {spec.format} {spec.type} model, not a main checkpoint")
    if spec.config_path is None:
        raise InvalidRequest(f"Model {spec.name} has no local config folder to convert it with")
    if dest.exists():
        raise Conflict(f"{dest.name} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(spec, device="cpu", dtype=_checkpoint_dtype(Path(spec.path)))
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        try:
            os.rename(staging, dest)
        except OSError as exc:
            # Someone created `dest` meanwhile (rename onto a non-empty folder fails); theirs stays.
            raise Conflict(f"{dest.name} already exists") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Converted %s to a diffusers folder at %s", spec.name, dest)


def _checkpoint_dtype(path: Path) -> torch.dtype:
    """The dtype of the checkpoint's floating-point weights (float32 when it cannot tell: .ckpt pickles)."""
    if path.suffix != ".safetensors":
        return torch.float32
    try:
        with safe_open(str(path), framework="pt") as checkpoint:
            for key in checkpoint.keys():  # noqa: SIM118 - safe_open is not a mapping
                dtype = _DTYPES.get(checkpoint.get_slice(key).get_dtype())
                if dtype is not None:
                    return dtype
    except (OSError, ValueError, SafetensorError) as exc:
        raise GenerationFailed(f"Could not read {path.name}: {exc}", error_type="ModelLoadError") from exc
    return torch.float32
