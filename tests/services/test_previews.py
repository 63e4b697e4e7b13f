"""Enfugue's intermediate previews: how often they are stored (the `intermediate_steps` setting, read per job from
the real SettingsService on Postgres; `intermediates: false` still disables them) and the age-based cleanup (files
in a real folder, their write times set; the periodic loop synchronised by its clock, not by sleeping)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from serve_app.domain.errors import ImageNotFound
from serve_app.domain.ports import NodeEvent
from serve_app.services.enfugue_intermediates import (
    PREVIEW_MAX_AGE,
    IntermediatePreviews,
    clean_previews_forever,
    delete_old_previews,
    intermediate_key,
    intermediate_name,
)
from serve_app.services.settings import SettingsService
from serve_app.storage.objects import FileObjectStore
from serve_app.storage.settings_repository import PgSettingsStore

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

ENFUGUE_JOB = {"enfugue": {"num_images": 1}}


def _preview(shade: int) -> dict[str, object]:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(buffer, format="PNG")
    return {"width": 8, "height": 8, "dataURL": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}


def _progress(step: int, node: str = "denoise_0") -> NodeEvent:
    return NodeEvent(kind="progress", invocation={}, source_node_id=node, step=step, total=20,
                     image=_preview(step * 10))  # fmt: skip


async def _stored_shade(store: FileObjectStore, job: uuid.UUID, index: int = 0) -> int | None:
    """The grey level of the job's stored preview of output `index` (each step's preview has its own), None when
    there is none."""
    try:
        data = await store.get(intermediate_key(intermediate_name(job, index)))
    except ImageNotFound:
        return None
    with Image.open(io.BytesIO(data)) as image:
        return int(image.convert("L").getpixel((0, 0)))  # type: ignore[arg-type]


async def test_previews_follow_the_intermediate_steps_setting(pool, tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path)
    settings = SettingsService(PgSettingsStore(pool), cache_s=0)
    previews = IntermediatePreviews(store, interval=settings.intermediate_steps)
    await settings.update({"intermediate_steps": 3})
    job = uuid.uuid4()
    shades = []
    for step in range(1, 8):
        await previews.on_event(job, ENFUGUE_JOB, _progress(step))
        shades.append(await _stored_shade(store, job))
        if step == 4:  # a change during the job applies to later jobs only
            await settings.update({"intermediate_steps": 100})
    # Stored at steps 3 and 6 (every 3 steps), not at 1, 2, 4, 5, 7.
    assert shades == [None, None, 30, 30, 30, 60, 60]
    previews.forget(job)

    await settings.update({"intermediate_steps": 0})  # 0: none at all
    quiet = uuid.uuid4()
    for step in range(1, 12):
        await previews.on_event(quiet, ENFUGUE_JOB, _progress(step))
    assert await _stored_shade(store, quiet) is None


async def test_the_default_is_every_ten_steps_and_intermediates_false_still_disables(pool, tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path)
    previews = IntermediatePreviews(store, interval=SettingsService(PgSettingsStore(pool)).intermediate_steps)
    job, off = uuid.uuid4(), uuid.uuid4()
    for step in range(1, 12):
        await previews.on_event(job, ENFUGUE_JOB, _progress(step))
        await previews.on_event(off, {"enfugue": {"num_images": 1, "intermediates": False}}, _progress(step))
    assert await _stored_shade(store, job) == 100  # step 10
    assert await _stored_shade(store, off) is None


async def _put_aged(store: FileObjectStore, key: str, age: timedelta, now: datetime) -> None:
    await store.put(key, b"png", "image/png")
    written = (now - age).timestamp()
    os.utime(store.root / key, (written, written))


async def test_previews_older_than_an_hour_are_deleted(tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path)
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    await _put_aged(store, "intermediates/old_0.png", PREVIEW_MAX_AGE + timedelta(seconds=1), now)
    await _put_aged(store, "intermediates/fresh_0.png", PREVIEW_MAX_AGE - timedelta(seconds=1), now)
    await _put_aged(store, "images/old.png", timedelta(days=30), now)  # results are never touched
    assert await delete_old_previews(store, now) == 1
    assert not (tmp_path / "intermediates/old_0.png").exists()
    assert (tmp_path / "intermediates/fresh_0.png").exists() and (tmp_path / "images/old.png").exists()
    # An hour later the other one goes too.
    assert await delete_old_previews(store, now + timedelta(hours=1)) == 1
    assert not (tmp_path / "intermediates/fresh_0.png").exists()
    assert await delete_old_previews(store, now + timedelta(hours=1)) == 0


async def test_the_cleanup_loop_runs_until_cancelled(tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path)
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    await _put_aged(store, "intermediates/old_0.png", timedelta(hours=2), now)
    second_round = asyncio.Event()
    rounds = 0

    def clock() -> datetime:
        nonlocal rounds
        rounds += 1
        if rounds == 2:  # the first round has finished
            second_round.set()
        return now

    task = asyncio.create_task(clean_previews_forever(store, every_s=0, clock=clock))
    await second_round.wait()
    assert not (tmp_path / "intermediates/old_0.png").exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_each_denoise_node_of_an_output_image_shows_its_progress(tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path)
    previews = IntermediatePreviews(store, every=2)
    job = uuid.uuid4()
    # A canvas job: region 0 then region 1 of output image 1, then its final outpaint, each counting from step 1.
    for node in (
        "region_0_1_denoise",
        "region_1_1_gaps_denoise",
        "refiner_region_1_1_denoise",
        "outpaint_1_denoise",
        "refiner_outpaint_1_denoise",
        "refiner_denoise_1",
    ):
        await previews.on_event(job, ENFUGUE_JOB, _progress(2, node))
        assert await _stored_shade(store, job, 1) == 20
        await previews.on_event(job, ENFUGUE_JOB, _progress(4, node))
        assert await _stored_shade(store, job, 1) == 40
        await store.delete([intermediate_key(intermediate_name(job, 1))])
    # Upscale re-diffusion and unrelated nodes store nothing.
    for node in ("upscale_denoise_0_1", "l2i_0", "region_x_denoise"):
        await previews.on_event(job, ENFUGUE_JOB, _progress(2, node))
    assert [await _stored_shade(store, job, index) for index in (0, 1)] == [None, None]
