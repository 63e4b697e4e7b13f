"""Canonical scheduler names (Enfugue's keys) mapped onto diffusers scheduler classes, in one table."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from serve_app.domain.errors import GenerationFailed, InvalidRequest


@dataclass(frozen=True)
class SchedulerChoice:
    """A diffusers scheduler class, the config it overrides, and the optional package it cannot run without."""

    cls: Any
    extra: Mapping[str, Any] = field(default_factory=dict)
    requires: str | None = None


_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}

SCHEDULERS: Mapping[str, SchedulerChoice] = {
    "ddim": SchedulerChoice(DDIMScheduler),
    "ddpm": SchedulerChoice(DDPMScheduler),
    "deis": SchedulerChoice(DEISMultistepScheduler),
    "dpmsm": SchedulerChoice(DPMSolverMultistepScheduler),
    "dpmsms": SchedulerChoice(DPMSolverMultistepScheduler, _SDE),
    "dpmsmk": SchedulerChoice(DPMSolverMultistepScheduler, _KARRAS),
    "dpmsmka": SchedulerChoice(DPMSolverMultistepScheduler, {**_SDE, **_KARRAS}),
    "dpmss": SchedulerChoice(DPMSolverSinglestepScheduler),
    "dpmssk": SchedulerChoice(DPMSolverSinglestepScheduler, _KARRAS),
    "heun": SchedulerChoice(HeunDiscreteScheduler),
    "dpmd": SchedulerChoice(KDPM2DiscreteScheduler),
    "dpmdk": SchedulerChoice(KDPM2DiscreteScheduler, _KARRAS),
    "adpmd": SchedulerChoice(KDPM2AncestralDiscreteScheduler),
    "adpmdk": SchedulerChoice(KDPM2AncestralDiscreteScheduler, _KARRAS),
    "dpmsde": SchedulerChoice(DPMSolverSDEScheduler, requires="torchsde"),
    "unipc": SchedulerChoice(UniPCMultistepScheduler),
    # diffusers computes LMS coefficients with scipy's integrator.
    "lmsd": SchedulerChoice(LMSDiscreteScheduler, requires="scipy"),
    "lmsdk": SchedulerChoice(LMSDiscreteScheduler, _KARRAS, requires="scipy"),
    "pndm": SchedulerChoice(PNDMScheduler),
    "eds": SchedulerChoice(EulerDiscreteScheduler),
    "edsk": SchedulerChoice(EulerDiscreteScheduler, _KARRAS),
    "eads": SchedulerChoice(EulerAncestralDiscreteScheduler),
    "lcm": SchedulerChoice(LCMScheduler),
}

# Latent diffusion settings a model's own config may leave out: class defaults meant for pixel-space
# models (clip_sample=True, PRK warm-up steps) would clip latents to [-1, 1] or add extra UNet calls.
_LATENT_DEFAULTS = {"clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True}


def make_scheduler(name: str | None, base_config: Mapping[str, Any], default_class: Any) -> Any:
    """A new scheduler for one generation: `name`'s class over the model's config, or `default_class` for None."""
    if name is None:
        return default_class.from_config(_merged(default_class, base_config, {}))
    choice = SCHEDULERS.get(name)
    if choice is None:
        raise InvalidRequest(f"Unknown scheduler {name}", field="scheduler")
    if choice.requires is not None and importlib.util.find_spec(choice.requires) is None:
        raise GenerationFailed(
            f"Scheduler {name} needs the Python package `{choice.requires}`, which is not installed on this server",
            error_type="SchedulerUnavailable",
        )
    return choice.cls.from_config(_merged(choice.cls, base_config, choice.extra))


def available(name: str) -> bool:
    """Whether `name` can be constructed here (its optional package, if any, is installed)."""
    requires = SCHEDULERS[name].requires
    return requires is None or importlib.util.find_spec(requires) is not None


def _merged(cls: Any, base_config: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    config = dict(base_config)
    accepted = inspect.signature(cls.__init__).parameters
    # diffusers drops every key listed in `_use_default_values` (keys the model's own config left out)
    # before building the new class, so a key we set on purpose must come off that list.
    defaulted = set(config.pop("_use_default_values", ()))
    for key, value in _LATENT_DEFAULTS.items():
        if key in accepted and (key not in config or key in defaulted):
            config[key] = value
            defaulted.discard(key)
    config.update(extra)
    config["_use_default_values"] = sorted(defaulted - extra.keys())
    return config
