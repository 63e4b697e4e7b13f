"""The InvokeAI model configs live in serve_app.services.model_configs; re-exported for the API modules."""

from __future__ import annotations

from serve_app.services.model_configs import (
    AnyDefaultSettings,
    AnyModelConfig,
    BaseModelType,
    ControlAdapterDefaultSettings,
    InvokeModelFormat,
    InvokeModelType,
    LoraModelDefaultSettings,
    MainModelDefaultSettings,
    ModelConfigBase,
    ModelsList,
    to_config,
)

__all__ = [
    "AnyDefaultSettings",
    "AnyModelConfig",
    "BaseModelType",
    "ControlAdapterDefaultSettings",
    "InvokeModelFormat",
    "InvokeModelType",
    "LoraModelDefaultSettings",
    "MainModelDefaultSettings",
    "ModelConfigBase",
    "ModelsList",
    "to_config",
]
