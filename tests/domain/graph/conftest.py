"""Model references shaped like the ones the UI sends."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def model() -> dict[str, Any]:
    return {"key": "main-key", "hash": "blake3:abc", "name": "tiny-sd15", "base": "sd-1", "type": "main"}


@pytest.fixture
def lora() -> dict[str, Any]:
    return {"key": "lora-key", "hash": "blake3:def", "name": "detail", "base": "sd-1", "type": "lora"}


@pytest.fixture
def vae() -> dict[str, Any]:
    return {"key": "vae-key", "hash": "blake3:123", "name": "ft-mse", "base": "sd-1", "type": "vae"}
