"""InvokeAI's scheduler names: one table with Enfugue's, every name builds and denoises."""

from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, TCDScheduler

from serve_app.domain.generation import SCHEDULER_NAMES
from serve_app.inference.nodes import ModelComponents
from serve_app.inference.schedulers import ALL_SCHEDULERS, INVOKEAI_SCHEDULER_NAMES, SCHEDULERS, available
from tests.inference.conftest import TinyModels
from tests.inference.nodes.conftest import generate_latents

# InvokeAI 6.8's SCHEDULER_NAME_VALUES, in its order.
INVOKEAI_NAMES = [
    "ddim", "ddpm", "deis", "deis_k", "lms", "lms_k", "pndm", "heun", "heun_k", "euler", "euler_k", "euler_a",
    "kdpm_2", "kdpm_2_k", "kdpm_2_a", "kdpm_2_a_k", "dpmpp_2s", "dpmpp_2s_k", "dpmpp_2m", "dpmpp_2m_k",
    "dpmpp_2m_sde", "dpmpp_2m_sde_k", "dpmpp_3m", "dpmpp_3m_k", "dpmpp_sde", "dpmpp_sde_k", "unipc", "unipc_k",
    "lcm", "tcd",
]  # fmt: skip


def test_one_table_holds_both_dialects() -> None:
    assert set(INVOKEAI_NAMES) == INVOKEAI_SCHEDULER_NAMES
    assert set(ALL_SCHEDULERS) == INVOKEAI_SCHEDULER_NAMES | SCHEDULER_NAMES
    assert set(SCHEDULERS) == SCHEDULER_NAMES
    assert all(SCHEDULERS[name] is ALL_SCHEDULERS[name] for name in SCHEDULERS)


@pytest.mark.parametrize("name", INVOKEAI_NAMES)
def test_every_invokeai_name_builds_and_denoises(models: TinyModels, components: ModelComponents, name: str) -> None:
    assert available(name)
    scheduler = components.scheduler(models.sd15, name, seed=1)
    choice = ALL_SCHEDULERS[name]
    assert type(scheduler) is choice.cls
    if name.endswith("_k"):
        assert scheduler.config.use_karras_sigmas is True
    passes: list[int] = []

    latents = generate_latents(
        components, models.sd15, scheduler=name, steps=2, on_step=lambda i, n, x: passes.append(i)
    )

    assert latents.shape == (1, 4, 8, 8)
    assert torch.isfinite(latents).all()
    assert passes and passes == list(range(1, len(passes) + 1))


def test_specific_mappings() -> None:
    assert ALL_SCHEDULERS["dpmpp_3m_k"].cls is DPMSolverMultistepScheduler
    assert ALL_SCHEDULERS["dpmpp_3m_k"].extra["solver_order"] == 3
    assert ALL_SCHEDULERS["dpmpp_2m_sde"].extra["algorithm_type"] == "sde-dpmsolver++"
    assert ALL_SCHEDULERS["tcd"].cls is TCDScheduler


@pytest.mark.parametrize("name", ["euler_a", "dpmpp_sde", "dpmpp_2m_sde", "kdpm_2_a", "ddpm", "tcd"])
def test_stochastic_schedulers_reproduce_for_a_seed(models: TinyModels, components: ModelComponents, name: str) -> None:
    first = generate_latents(components, models.sd15, scheduler=name, steps=2, seed=5)
    again = generate_latents(components, models.sd15, scheduler=name, steps=2, seed=5)

    assert torch.equal(first, again)
