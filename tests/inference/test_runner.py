"""GenerationRunner: sizes, determinism, batching, SDXL, progress and cancellation."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.domain.errors import InvalidRequest, JobCanceled
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.runner import GenerationRunner, check_inputs
from tests.inference.conftest import TinyModels
from tests.inference.support import pixels, request


@pytest.mark.parametrize(("width", "height"), [(64, 64), (64, 96), (96, 64)])
def test_images_have_the_requested_size(models: TinyModels, runner: GenerationRunner, width: int, height: int) -> None:
    output = runner.run(models.sd15, request(width=width, height=height, num_images=2))

    assert [image.size for image in output.images] == [(width, height)] * 2
    assert output.seeds == [7, 8]
    assert all(image.mode == "RGB" for image in output.images)


def test_same_seed_gives_identical_pixels_and_another_seed_does_not(
    models: TinyModels, runner: GenerationRunner
) -> None:
    first = runner.run(models.sd15, request(seed=11)).images[0]
    again = runner.run(models.sd15, request(seed=11)).images[0]
    other = runner.run(models.sd15, request(seed=12)).images[0]

    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(other)).mean() > 5


def test_image_i_matches_the_same_seed_generated_alone(models: TinyModels, runner: GenerationRunner) -> None:
    batch = runner.run(models.sdxl, request(seed=20, num_images=2))
    alone = [runner.run(models.sdxl, request(seed=seed)).images[0] for seed in (20, 21)]

    assert batch.seeds == [20, 21]
    for batched, single in zip(batch.images, alone, strict=True):
        # Same noise per image; a batched UNet pass may round differently by one float ulp, never more
        # than one 8-bit level after decoding.
        assert np.abs(pixels(batched) - pixels(single)).max() <= 1
    assert np.abs(pixels(batch.images[0]) - pixels(batch.images[1])).mean() > 5


def test_sdxl_uses_both_prompts(models: TinyModels, runner: GenerationRunner) -> None:
    same = runner.run(models.sdxl, request(width=64, height=96)).images[0]
    explicit = runner.run(models.sdxl, request(width=64, height=96, prompt_2="the cat on a mat")).images[0]
    other = runner.run(models.sdxl, request(width=64, height=96, prompt_2="and then a dog")).images[0]

    assert same.size == (64, 96)
    # prompt_2 defaults to the prompt; a different prompt_2 reaches the second text encoder.
    assert np.array_equal(pixels(same), pixels(explicit))
    assert not np.array_equal(pixels(same), pixels(other))


def test_on_step_reports_every_step_in_order(models: TinyModels, runner: GenerationRunner) -> None:
    steps: list[tuple[int, int]] = []

    runner.run(models.sd15, request(steps=4), on_step=lambda done, total: steps.append((done, total)))

    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_should_stop_cancels_within_one_step(models: TinyModels, runner: GenerationRunner) -> None:
    steps: list[tuple[int, int]] = []

    with pytest.raises(JobCanceled):
        runner.run(
            models.sd15,
            request(steps=4),
            on_step=lambda done, total: steps.append((done, total)),
            should_stop=lambda: len(steps) >= 2,
        )

    assert steps == [(1, 4), (2, 4)]


def test_a_job_canceled_before_it_starts_runs_no_step(models: TinyModels, runner: GenerationRunner) -> None:
    steps: list[tuple[int, int]] = []

    with pytest.raises(JobCanceled):
        runner.run(models.sd15, request(), on_step=lambda *step: steps.append(step), should_stop=lambda: True)

    assert steps == []


def test_a_run_never_changes_the_cached_models_scheduler(models: TinyModels) -> None:
    cache = ModelCache()
    scheduler = cache.get(models.sd15, "scheduler")
    config = dict(scheduler.config)

    GenerationRunner(cache).run(models.sd15, request(scheduler="eads"))

    assert cache.get(models.sd15, "scheduler") is scheduler
    assert dict(scheduler.config) == config
    # The run stepped its own scheduler: the shared one was never even given timesteps.
    assert scheduler.num_inference_steps is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"width": 60}, "width"),
        ({"height": 0}, "height"),
        ({"steps": 0}, "steps"),
        ({"num_images": 0}, "num_images"),
        ({"seed": -1}, "seed"),
        ({"guidance_scale": -0.5}, "guidance_scale"),
        ({"scheduler": "nope"}, "scheduler"),
        ({"kind": "img2img"}, "kind"),
    ],
)
def test_check_inputs_names_the_bad_field_and_value(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_inputs(request(**overrides))

    assert raised.value.field == field
    assert field in raised.value.message
    assert str(next(iter(overrides.values()))) in raised.value.message


def test_run_checks_inputs_before_loading_anything(models: TinyModels) -> None:
    cache = ModelCache()
    with pytest.raises(InvalidRequest):
        GenerationRunner(cache).run(models.sd15, request(width=65))

    assert cache.loaded() == []


def test_a_missing_size_means_the_models_native_size(models: TinyModels, runner: GenerationRunner) -> None:
    output = runner.run(models.sd15, request(width=None, height=64, steps=1))

    assert output.images[0].size == (models.sd15.native_size, 64)
