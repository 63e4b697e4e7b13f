"""The scheduler table: every canonical name builds its diffusers class and runs a job."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from serve_app.domain.errors import GenerationFailed, InvalidRequest
from serve_app.domain.generation import SCHEDULER_NAMES
from serve_app.inference.runner import GenerationRunner
from serve_app.inference.schedulers import SCHEDULERS, available, make_scheduler
from serve_app.inference.tiny import build_tiny_sd15, build_tiny_sdxl
from tests.inference.conftest import TinyModels
from tests.inference.support import request


def test_the_table_covers_exactly_the_domain_names() -> None:
    assert set(SCHEDULERS) == SCHEDULER_NAMES


@pytest.mark.parametrize("name", sorted(SCHEDULER_NAMES))
def test_every_scheduler_runs_a_small_job(models: TinyModels, runner: GenerationRunner, name: str) -> None:
    steps: list[tuple[int, int]] = []
    job = request(scheduler=name)

    if not available(name):
        # Its optional package is missing here: a clear job error, before any denoising step.
        with pytest.raises(GenerationFailed, match=SCHEDULERS[name].requires or "") as raised:
            runner.run(models.sd15, job, on_step=lambda *step: steps.append(step))
        assert raised.value.error_type == "SchedulerUnavailable"
        assert steps == []
        return

    image = runner.run(models.sd15, job, on_step=lambda *step: steps.append(step)).images[0]

    assert image.size == (64, 64)
    assert np.asarray(image).std() > 0
    # Second-order schedulers call the UNet more than once per step; progress counts every call.
    total = steps[-1][1]
    assert total >= 2
    assert steps == [(i, total) for i in range(1, total + 1)]


@pytest.fixture(scope="module")
def base_schedulers() -> dict[str, Any]:
    return {"sd15": build_tiny_sd15().scheduler, "sdxl": build_tiny_sdxl().scheduler}


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
@pytest.mark.parametrize("name", sorted(n for n in SCHEDULER_NAMES if available(n)))
def test_each_name_gets_its_class_and_overrides(base_schedulers: dict[str, Any], model: str, name: str) -> None:
    base = base_schedulers[model]
    choice = SCHEDULERS[name]

    scheduler = make_scheduler(name, base.config, type(base))

    assert type(scheduler) is choice.cls
    for key, value in choice.extra.items():
        assert scheduler.config[key] == value
    # The model's noise schedule carries over.
    assert scheduler.config.beta_start == base.config.beta_start
    assert scheduler.config.beta_schedule == base.config.beta_schedule


def test_karras_names_enable_karras_sigmas_even_when_the_model_config_left_them_out() -> None:
    base = EulerDiscreteScheduler.from_config({"beta_schedule": "scaled_linear"})
    assert "use_karras_sigmas" in base.config["_use_default_values"]

    assert make_scheduler("edsk", base.config, type(base)).config.use_karras_sigmas is True
    assert make_scheduler("eds", base.config, type(base)).config.use_karras_sigmas is False
    both = make_scheduler("dpmsmka", base.config, type(base))
    assert (type(both), both.config.algorithm_type, both.config.use_karras_sigmas) == (
        DPMSolverMultistepScheduler,
        "sde-dpmsolver++",
        True,
    )


def test_latent_models_never_clip_samples() -> None:
    base = EulerDiscreteScheduler.from_config({"beta_schedule": "scaled_linear"})

    assert make_scheduler("ddim", base.config, type(base)).config.clip_sample is False
    assert make_scheduler("ddpm", base.config, type(base)).config.clip_sample is False


def test_none_gives_a_new_scheduler_of_the_models_default_class() -> None:
    base = build_tiny_sd15().scheduler

    first = make_scheduler(None, base.config, type(base))
    second = make_scheduler(None, base.config, type(base))

    assert (type(first), type(second)) == (DDIMScheduler, DDIMScheduler)
    assert first is not base and first is not second
    assert dict(first.config) == dict(second.config)


def test_an_unknown_name_is_an_invalid_request() -> None:
    base = build_tiny_sd15().scheduler

    with pytest.raises(InvalidRequest) as raised:
        make_scheduler("warp", base.config, type(base))

    assert raised.value.field == "scheduler"


def test_enfugue_keys_map_to_the_invokeai_names_of_the_same_scheduler():
    from serve_app.domain.generation import ENFUGUE_TO_INVOKEAI_SCHEDULER, SCHEDULER_NAMES
    from serve_app.inference.schedulers import ALL_SCHEDULERS

    assert set(ENFUGUE_TO_INVOKEAI_SCHEDULER) == SCHEDULER_NAMES
    for enfugue, invokeai in ENFUGUE_TO_INVOKEAI_SCHEDULER.items():
        ours, theirs = ALL_SCHEDULERS[enfugue], ALL_SCHEDULERS[invokeai]
        assert ours.cls is theirs.cls, enfugue
        # InvokeAI's plain names spell out "no Karras sigmas", the class default Enfugue's keys rely on.
        assert {**ours.extra, "use_karras_sigmas": ours.extra.get("use_karras_sigmas", False)} == {
            **theirs.extra,
            "use_karras_sigmas": theirs.extra.get("use_karras_sigmas", False),
        }, enfugue
