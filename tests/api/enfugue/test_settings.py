"""Enfugue `/api/settings`, `/api/announcements` and `/api/logs` over real HTTP (ASGI), real Postgres.

The settings take effect: the JobService behind the app reads `max_queued_invocations` at every submit. No
dispatcher runs, so submitted jobs stay waiting.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.api.log_buffer import LogBuffer
from serve_app.domain.jobs import JobStatus
from serve_app.services.jobs import JobService
from serve_app.services.settings import DEFAULTS, SettingsService
from serve_app.serving.args import StorageArgs
from serve_app.serving.wiring import build_catalog, build_store
from serve_app.storage.settings_repository import PgSettingsStore
from tests.api.conftest import TEST_LIMITS
from tests.api.test_enfugue_validation import SMALL, assert_enfugue_error

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
def settings(pool) -> SettingsService:
    return SettingsService(PgSettingsStore(pool))


@pytest_asyncio.fixture(loop_scope="session")
async def http(repo, settings, models_dir: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = build_store(StorageArgs(url=(tmp_path / "files").as_uri()))
    jobs = JobService(
        repo=repo,
        catalog=build_catalog(str(models_dir), "demo-sd15"),
        store=store,
        limits=TEST_LIMITS,  # 3 waiting jobs until the settings say otherwise
        settings=settings,
    )
    app = create_app(ApiContext(jobs=jobs, store=store, version="9.9.9", settings=settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve-app.test") as client:
        yield client


def data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    return response.json()["data"]


async def test_get_returns_every_setting_in_the_envelope(http) -> None:
    response = await http.get("/api/settings")
    assert data(response) == DEFAULTS
    assert response.json()["meta"] == {"params": {}}


async def test_post_changes_some_keys_and_returns_all(http) -> None:
    changed = data(await http.post("/api/settings", json={"safe": False, "cache_mode": "always", "nope": 1}))
    assert changed == {**DEFAULTS, "safe": False, "cache_mode": "always"}
    assert data(await http.get("/api/settings")) == changed


async def test_max_queued_invocations_limits_waiting_invocations(http, repo) -> None:
    assert data(await http.post("/api/settings", json={"max_queued_invocations": 1}))["max_queued_invocations"] == 1
    assert data(await http.post("/api/invoke", json=SMALL))["status"] == "queued"
    # The configured limit is 3; the setting's 1 refuses the second waiting job.
    assert_enfugue_error(await http.post("/api/invoke", json=SMALL), 429, "TooManyRequestsError", "at most 1")
    assert (await repo.count_by_status())[JobStatus.PENDING] == 1
    # Raised again, it lets more wait.
    await http.post("/api/settings", json={"max_queued_invocations": 2})
    assert data(await http.post("/api/invoke", json=SMALL))["status"] == "queued"


@pytest.mark.parametrize(
    "body",
    [
        {"max_queued_invocations": "many"},
        {"max_concurrent_downloads": 0},
        {"safe": [True]},
        {"precision": "fp8"},
        {"switch_mode": 3},
    ],
)
async def test_bad_values_are_400_and_change_nothing(http, body) -> None:
    [key] = body
    assert_enfugue_error(await http.post("/api/settings", json=body), 400, "BadRequestError", key)
    assert data(await http.get("/api/settings")) == DEFAULTS


async def test_a_body_that_is_not_an_object_is_400(http) -> None:
    assert_enfugue_error(await http.post("/api/settings", content=b"[1]"), 400, "BadRequestError")
    assert_enfugue_error(await http.post("/api/settings", content=b"{nope"), 400, "BadRequestError")


async def test_announcements_are_empty_and_snooze_is_stored(http, settings) -> None:
    assert data(await http.get("/api/announcements")) == []
    assert data(await http.post("/api/announcements/snooze")) is None
    snoozed = await settings.snoozed()
    assert snoozed["snooze.version"] == "9.9.9" and snoozed["initialized"] is True
    assert data(await http.get("/api/announcements")) == []


# Logs: records of the `serve_app` loggers of this process, newest first.


@pytest.fixture
def loggers() -> Iterator[tuple[logging.Logger, logging.Logger]]:
    # Unique names keep other tests' records out of the filtered results; DEBUG so every record is kept.
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    first, second = (logging.getLogger(f"serve_app.test_logs_{stamp}.{name}") for name in ("alpha", "beta"))
    for logger in (first, second):
        logger.setLevel(logging.DEBUG)
    yield first, second
    for logger in (first, second):
        logger.setLevel(logging.NOTSET)


async def test_logs_are_newest_first_with_the_source_of_each_record(http, loggers) -> None:
    alpha, beta = loggers
    prefix = alpha.name.rsplit(".", 1)[0]
    alpha.info("first %s", "message")
    try:
        raise ValueError("boom")
    except ValueError:
        beta.exception("second went wrong")
    entries = data(await http.get("/api/logs", params={"logger": prefix}))
    assert [(entry["logger"], entry["level"]) for entry in entries] == [(beta.name, "ERROR"), (alpha.name, "INFO")]
    assert entries[1]["content"] == "first message"
    assert entries[1]["file"] == "test_settings.py" and isinstance(entries[1]["line"], int)
    assert entries[0]["content"].startswith("second went wrong\nTraceback")
    assert "ValueError: boom" in entries[0]["content"]
    assert datetime.fromisoformat(entries[0]["timestamp"]) >= datetime.fromisoformat(entries[1]["timestamp"])


async def test_logs_filters(http, loggers) -> None:
    alpha, beta = loggers
    prefix = alpha.name.rsplit(".", 1)[0]
    alpha.debug("Needle in alpha")
    alpha.warning("plain alpha")
    beta.warning("a NEEDLE in beta")
    beta.error("plain beta")

    async def contents(**params: object) -> list[str]:
        entries = data(await http.get("/api/logs", params={"logger": prefix, **params}))
        return [entry["content"] for entry in entries]

    assert await contents(level="warning") == ["a NEEDLE in beta", "plain alpha"]
    assert await contents(level=["ERROR", "debug"]) == ["plain beta", "Needle in alpha"]
    assert await contents(search="needle") == ["a NEEDLE in beta", "Needle in alpha"]
    assert await contents(search="needle", level="DEBUG") == ["Needle in alpha"]
    only_alpha = data(await http.get("/api/logs", params={"logger": alpha.name}))
    assert [entry["content"] for entry in only_alpha] == ["plain alpha", "Needle in alpha"]
    both = data(await http.get("/api/logs", params=[("logger", alpha.name), ("logger", beta.name)]))
    assert len(both) == 4
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert await contents(since=future) == []
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")  # naive: UTC
    assert len(await contents(since=past)) == 4
    # A logger name matches itself and its children only, not other names that share its first letters.
    assert data(await http.get("/api/logs", params={"logger": f"{prefix}.alp"})) == []


async def test_logs_refuse_a_since_that_is_no_time(http) -> None:
    assert_enfugue_error(await http.get("/api/logs", params={"since": "yesterday"}), 400, "BadRequestError", "since")


async def test_the_buffer_keeps_only_the_newest_records() -> None:
    buffer = LogBuffer(capacity=2)
    logger = logging.getLogger("serve_app.test_logs_ring")
    for number in range(3):
        buffer.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 1, "record %d", (number,), None))
    assert [entry.content for entry in buffer.entries()] == ["record 2", "record 1"]
