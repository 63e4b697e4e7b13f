"""SettingsService over a real Postgres store: defaults, validation, partial updates, the reader's cache, and
DownloadService obeying the download limits it holds (real HTTP server, real fetcher)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from serve_app.domain.errors import InvalidRequest, QueueFull
from serve_app.domain.model_jobs import DownloadStatus
from serve_app.services.accounts import AccountService
from serve_app.services.downloads import DownloadService
from serve_app.services.priority_slots import PrioritySlots
from serve_app.services.settings import DEFAULTS, SettingsService
from serve_app.storage.account_repository import PgAccountStore
from serve_app.storage.http_fetch import HttpFetcher
from serve_app.storage.model_job_store import PgModelJobStore
from serve_app.storage.settings_repository import PgSettingsStore
from tests.services.test_accounts import FAST
from tests.support.http_files import FileServer
from tests.support.recording_bus import RecordingBus

pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="session")]

DATA = os.urandom(50_000)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_defaults_are_enfugues_and_cover_every_controlnet(pool) -> None:
    settings = await SettingsService(PgSettingsStore(pool)).get()
    assert settings == DEFAULTS
    assert settings["safe"] is True and settings["auth"] is False
    assert (settings["max_queued_invocations"], settings["max_queued_downloads"]) == (2, 10)
    assert (settings["max_concurrent_downloads"], settings["intermediate_steps"]) == (2, 10)
    assert (settings["switch_mode"], settings["cache_mode"], settings["precision"]) == ("offload", "xl", None)
    assert settings["canny"] == "lllyasviel/sd-controlnet-canny"
    assert settings["canny_xl"] == "diffusers/controlnet-canny-sdxl-1.0"
    assert settings["pose_xl"] is None
    assert len([key for key in settings if key.endswith("_xl")]) == 12


async def test_configured_defaults_replace_enfugues(pool) -> None:
    settings = SettingsService(PgSettingsStore(pool), defaults={"max_queued_invocations": 256})
    assert (await settings.get())["max_queued_invocations"] == 256
    assert await settings.max_waiting_jobs() is None  # a default is not a setting: the configured limit applies


async def test_partial_update_returns_everything_and_persists(pool) -> None:
    settings = SettingsService(PgSettingsStore(pool))
    changed = await settings.update(
        {"safe": False, "max_queued_invocations": 5, "precision": "half", "canny": "me/canny", "bogus": 1}
    )
    assert changed == {**DEFAULTS, "safe": False, "max_queued_invocations": 5, "precision": "half", "canny": "me/canny"}
    assert "bogus" not in changed  # unknown keys are ignored, as Enfugue does
    assert await SettingsService(PgSettingsStore(pool)).get() == changed  # another replica reads the same
    assert await PgSettingsStore(pool).get_all() == {
        "safe": False,
        "max_queued_invocations": 5,
        "precision": "half",
        "canny": "me/canny",
    }


async def test_form_strings_convert_never_is_false_and_a_null_controlnet_is_the_default(pool) -> None:
    settings = SettingsService(PgSettingsStore(pool))
    changed = await settings.update(
        {"max_concurrent_downloads": "3", "safe": "false", "inpainting": "never", "depth": None, "switch_mode": None}
    )
    assert changed["max_concurrent_downloads"] == 3
    assert changed["safe"] is False
    assert changed["inpainting"] is False
    assert changed["depth"] == "lllyasviel/sd-controlnet-depth"
    assert changed["switch_mode"] is None  # "keep in memory" is a real value, unlike a controlnet's null


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_queued_invocations", "lots"),
        ("max_queued_invocations", -1),
        ("max_queued_invocations", 1.5),
        ("max_concurrent_downloads", 0),
        ("intermediate_steps", None),
        ("safe", "maybe"),
        ("auth", None),
        ("switch_mode", "swap"),
        ("cache_mode", "never"),
        ("precision", "double"),
        ("inpainting", "always"),
        ("canny", ""),
        ("canny_xl", 5),
    ],
)
async def test_bad_values_are_refused_and_nothing_is_stored(pool, key, value) -> None:
    settings = SettingsService(PgSettingsStore(pool))
    with pytest.raises(InvalidRequest, match=f"`{key}`") as error:
        await settings.update({"safe": False, key: value})  # the good key is not stored either
    assert error.value.field == key
    assert await PgSettingsStore(pool).get_all() == {}


async def test_reader_sees_another_replicas_change_once_its_cache_expires(pool) -> None:
    clock = Clock()
    reader = SettingsService(PgSettingsStore(pool), cache_s=2.0, clock=clock)
    writer = SettingsService(PgSettingsStore(pool))
    assert await reader.max_waiting_jobs() is None
    await writer.update({"max_queued_invocations": 1, "max_queued_downloads": 0, "max_concurrent_downloads": 4})
    assert await reader.max_waiting_jobs() is None  # cached for 2 s
    clock.now += 2.0
    assert await reader.max_waiting_jobs() == 1
    assert await reader.max_queued_downloads() == 0
    assert await reader.max_concurrent_downloads() == 4
    await reader.update({"max_queued_invocations": 7})
    assert await reader.max_waiting_jobs() == 7  # its own change applies at once


async def test_snooze_and_auth_are_stored(pool) -> None:
    accounts = AccountService(PgAccountStore(pool), FAST)
    settings = SettingsService(PgSettingsStore(pool), accounts=accounts)
    assert await settings.snoozed() == {}
    await settings.snooze("0.9.0")
    snoozed = await settings.snoozed()
    assert snoozed["initialized"] is True and snoozed["snooze.version"] == "0.9.0"
    assert snoozed["snooze.time"].startswith("20")
    assert await settings.auth_enabled() is False
    assert await settings.stored_auth() is None  # never posted: the deployment's setting applies
    await accounts.create_user("root", "pw", "pw", admin=True)
    await settings.update({"auth": True})
    assert await SettingsService(PgSettingsStore(pool)).auth_enabled() is True
    assert await SettingsService(PgSettingsStore(pool)).stored_auth() is True


async def test_auth_on_needs_an_admin_who_can_log_in_and_revokes_sessions_not_keys(pool) -> None:
    accounts = AccountService(PgAccountStore(pool), FAST)
    settings = SettingsService(PgSettingsStore(pool), accounts=accounts, cache_s=0)
    await accounts.create_user("alice", "pw", "pw")
    with pytest.raises(InvalidRequest, match="administrator with a password") as refused:
        await settings.update({"auth": True, "safe": False})
    assert refused.value.field == "auth"
    assert await settings.stored_auth() is None and (await settings.get())["safe"] is True  # nothing stored
    with pytest.raises(InvalidRequest, match="accounts"):
        await SettingsService(PgSettingsStore(pool)).update({"auth": True})

    await accounts.create_user("root", "pw", "pw", admin=True)
    session = await accounts.login("alice", "pw")
    key = await accounts.create_api_key("alice")
    await settings.update({"auth": True})
    assert await accounts.authenticate(session.token) is None  # everyone logs in again
    assert await accounts.authenticate(key.token) is not None  # scripts keep working
    again = await accounts.login("alice", "pw")
    await settings.update({"auth": False})  # turning it off revokes sessions too (as Enfugue)
    assert await accounts.authenticate(again.token) is None
    assert await settings.stored_auth() is False


async def test_intermediate_steps_is_read_back_with_its_default(pool) -> None:
    settings = SettingsService(PgSettingsStore(pool), cache_s=0)
    assert await settings.intermediate_steps() == 10
    await settings.update({"intermediate_steps": 3})
    assert await settings.intermediate_steps() == 3
    await settings.update({"intermediate_steps": 0})
    assert await settings.intermediate_steps() == 0


# DownloadService obeys the download limits


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as files:
        yield files


@pytest_asyncio.fixture(loop_scope="session")
async def fetcher() -> AsyncIterator[HttpFetcher]:
    fetch = HttpFetcher(timeout_s=20)
    yield fetch
    await fetch.aclose()


async def test_download_limits_set_in_settings_take_effect(pool, server, fetcher, tmp_path: Path) -> None:
    settings = SettingsService(PgSettingsStore(pool))
    await settings.update({"max_concurrent_downloads": 1, "max_queued_downloads": 1})
    bus = RecordingBus()
    service = DownloadService(
        PgModelJobStore(pool),
        fetch=fetcher,
        bus=bus,
        allowed_roots=[tmp_path],
        max_concurrent=4,  # the configured limits, replaced by the settings
        max_queued=None,
        settings=settings,
        progress_interval_s=0.0,
    )
    gate = server.hold("/a", after=10)
    try:
        first = await service.download(server.add("/a", DATA), tmp_path)
        await bus.wait_for("download_started")
        second = await service.download(server.add("/b", DATA), tmp_path)  # one slot: it waits
        with pytest.raises(QueueFull, match="1 of at most 1"):
            await service.download(server.add("/c", DATA), tmp_path)
        assert (await service.get(second.id)).status is DownloadStatus.WAITING
        assert len(await service.list()) == 2  # the refused one left no row

        # Two slots from the next download on: the waiting one starts and finishes while the first is held.
        await settings.update({"max_concurrent_downloads": 2})
        third = await service.download(server.add("/d", DATA), tmp_path)
        assert (await service.wait(second.id)).status is DownloadStatus.COMPLETED
        assert (await service.wait(third.id)).status is DownloadStatus.COMPLETED
        assert (await service.get(first.id)).status is DownloadStatus.RUNNING
    finally:
        gate.set()
    assert (await service.wait(first.id)).status is DownloadStatus.COMPLETED
    await service.aclose()


async def test_without_settings_the_configured_download_limits_apply(pool, server, fetcher, tmp_path: Path) -> None:
    bus = RecordingBus()
    service = DownloadService(
        PgModelJobStore(pool),
        fetch=fetcher,
        bus=bus,
        allowed_roots=[tmp_path],
        max_concurrent=1,
        max_queued=0,
        settings=SettingsService(PgSettingsStore(pool)),  # nothing set: the configured limits stand
        progress_interval_s=0.0,
    )
    gate = server.hold("/a", after=10)
    try:
        first = await service.download(server.add("/a", DATA), tmp_path)
        await bus.wait_for("download_started")
        with pytest.raises(QueueFull):
            await service.download(server.add("/b", DATA), tmp_path)
    finally:
        gate.set()
    assert (await service.wait(first.id)).status is DownloadStatus.COMPLETED
    # The queue is free again once the first has finished.
    assert (await service.wait((await service.download(server.add("/b", DATA), tmp_path)).id)).bytes == len(DATA)
    await service.aclose()


async def test_fewer_download_slots_let_no_waiter_in_until_enough_holders_left() -> None:
    slots = PrioritySlots(2)
    entered: list[str] = []
    leave = {name: asyncio.Event() for name in ("a", "b", "c")}

    async def holder(name: str) -> None:
        async with slots.hold(0, len(entered)):
            entered.append(name)
            await leave[name].wait()

    tasks = [asyncio.create_task(holder(name)) for name in ("a", "b")]
    await asyncio.sleep(0)  # let both take their slot (a yield to the loop, not a timed wait)
    slots.resize(1)
    waiter = asyncio.create_task(holder("c"))
    leave["a"].set()
    await tasks[0]
    assert entered == ["a", "b"]  # one holder left, but one slot is all there is now
    leave["b"].set()
    await tasks[1]
    leave["c"].set()
    await waiter
    assert entered == ["a", "b", "c"]
