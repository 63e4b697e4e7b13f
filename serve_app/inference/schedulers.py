"""Scheduler names of both dialects (Enfugue's keys, InvokeAI's names) mapped onto diffusers classes, in one table."""

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
    TCDScheduler,
    UniPCMultistepScheduler,
)

from serve_app.domain.errors import GenerationFailed, InvalidRequest
from serve_app.domain.generation import SCHEDULER_NAMES


@dataclass(frozen=True)
class SchedulerChoice:
    """A diffusers scheduler class, the config it overrides, and the optional package it cannot run without."""

    cls: Any
    extra: Mapping[str, Any] = field(default_factory=dict)
    requires: str | None = None


_KARRAS = {"use_karras_sigmas": True}
_NO_KARRAS = {"use_karras_sigmas": False}
_SDE = {"algorithm_type": "sde-dpmsolver++"}
_3M = {"algorithm_type": "dpmsolver++", "solver_order": 3}

# Every name either dialect sends, in one table. The first block is Enfugue's (the domain's canonical names,
# `SCHEDULER_NAMES`); the second is InvokeAI's (`SCHEDULER_NAME_VALUES`, mapped as its `SCHEDULER_MAP` does:
# `_k` = Karras sigmas, `_a` = ancestral). Names both dialects share (ddim, ddpm, deis, heun, pndm, unipc, lcm)
# mean the same scheduler in both and appear once.
ALL_SCHEDULERS: Mapping[str, SchedulerChoice] = {
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
    # InvokeAI's names.
    "deis_k": SchedulerChoice(DEISMultistepScheduler, _KARRAS),
    "lms": SchedulerChoice(LMSDiscreteScheduler, _NO_KARRAS, requires="scipy"),
    "lms_k": SchedulerChoice(LMSDiscreteScheduler, _KARRAS, requires="scipy"),
    "heun_k": SchedulerChoice(HeunDiscreteScheduler, _KARRAS),
    "euler": SchedulerChoice(EulerDiscreteScheduler, _NO_KARRAS),
    "euler_k": SchedulerChoice(EulerDiscreteScheduler, _KARRAS),
    "euler_a": SchedulerChoice(EulerAncestralDiscreteScheduler),
    "kdpm_2": SchedulerChoice(KDPM2DiscreteScheduler, _NO_KARRAS),
    "kdpm_2_k": SchedulerChoice(KDPM2DiscreteScheduler, _KARRAS),
    "kdpm_2_a": SchedulerChoice(KDPM2AncestralDiscreteScheduler, _NO_KARRAS),
    "kdpm_2_a_k": SchedulerChoice(KDPM2AncestralDiscreteScheduler, _KARRAS),
    "dpmpp_2s": SchedulerChoice(DPMSolverSinglestepScheduler, _NO_KARRAS),
    "dpmpp_2s_k": SchedulerChoice(DPMSolverSinglestepScheduler, _KARRAS),
    "dpmpp_2m": SchedulerChoice(DPMSolverMultistepScheduler, _NO_KARRAS),
    "dpmpp_2m_k": SchedulerChoice(DPMSolverMultistepScheduler, _KARRAS),
    "dpmpp_2m_sde": SchedulerChoice(DPMSolverMultistepScheduler, {**_SDE, **_NO_KARRAS}),
    "dpmpp_2m_sde_k": SchedulerChoice(DPMSolverMultistepScheduler, {**_SDE, **_KARRAS}),
    "dpmpp_3m": SchedulerChoice(DPMSolverMultistepScheduler, {**_3M, **_NO_KARRAS}),
    "dpmpp_3m_k": SchedulerChoice(DPMSolverMultistepScheduler, {**_3M, **_KARRAS}),
    "dpmpp_sde": SchedulerChoice(DPMSolverSDEScheduler, _NO_KARRAS, requires="torchsde"),
    "dpmpp_sde_k": SchedulerChoice(DPMSolverSDEScheduler, _KARRAS, requires="torchsde"),
    "unipc_k": SchedulerChoice(UniPCMultistepScheduler, _KARRAS),
    "tcd": SchedulerChoice(TCDScheduler),
}

# The Enfugue dialect's view (the domain validates requests against exactly these names).
SCHEDULERS: Mapping[str, SchedulerChoice] = {name: ALL_SCHEDULERS[name] for name in sorted(SCHEDULER_NAMES)}
INVOKEAI_SCHEDULER_NAMES: frozenset[str] = frozenset(
    {
        "ddim", "ddpm", "deis", "deis_k", "lms", "lms_k", "pndm", "heun", "heun_k", "euler", "euler_k", "euler_a",
        "kdpm_2", "kdpm_2_k", "kdpm_2_a", "kdpm_2_a_k", "dpmpp_2s", "dpmpp_2s_k", "dpmpp_2m", "dpmpp_2m_k",
        "dpmpp_2m_sde", "dpmpp_2m_sde_k", "dpmpp_3m", "dpmpp_3m_k", "dpmpp_sde", "dpmpp_sde_k", "unipc", "unipc_k",
        "lcm", "tcd",
    }
)  # fmt: skip

# Latent diffusion settings a model's own config may leave out: class defaults meant for pixel-space
# models (clip_sample=True, PRK warm-up steps) would clip latents to [-1, 1] or add extra UNet calls.
_LATENT_DEFAULTS = {"clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True}


def make_scheduler(
    name: str | None, base_config: Mapping[str, Any], default_class: Any, *, seed: int | None = None
) -> Any:
    """A new scheduler for one generation: `name`'s class over the model's config, or `default_class` for None.

    `name` may come from either dialect. `seed` seeds the Brownian noise of DPMSolverSDE (which takes it only
    at construction), so that those names reproduce for a seed, as InvokeAI does."""
    if name is None:
        return default_class.from_config(_merged(default_class, base_config, {}))
    choice = ALL_SCHEDULERS.get(name)
    if choice is None:
        raise InvalidRequest(f"Unknown scheduler {name}", field="scheduler")
    if choice.requires is not None and importlib.util.find_spec(choice.requires) is None:
        raise GenerationFailed(
            f"Scheduler {name} needs the Python package `{choice.requires}`, which is not installed on this server",
            error_type="SchedulerUnavailable",
        )
    extra = dict(choice.extra)
    if choice.cls is DPMSolverSDEScheduler and seed is not None:
        extra["noise_sampler_seed"] = seed
    return choice.cls.from_config(_merged(choice.cls, base_config, extra))


def available(name: str) -> bool:
    """Whether `name` can be constructed here (its optional package, if any, is installed)."""
    requires = ALL_SCHEDULERS[name].requires
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
