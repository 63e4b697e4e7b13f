"""`auth` posted to `/api/settings` switches authentication at runtime on every replica: two apps (two Ingress
replicas) share one database, each with its own SettingsService cache, whose clock the test moves instead of
sleeping. Turning auth on needs an admin who can log in; any post of `auth` logs every session out (API keys stay).
SERVE_APP_AUTH (`ApiContext.auth_enabled`) is the default until something is posted.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.services.accounts import AccountService
from serve_app.services.jobs import JobService
from serve_app.services.settings import SettingsService
from serve_app.serving.args import StorageArgs
from serve_app.serving.wiring import build_catalog, build_store
from serve_app.storage.account_repository import PgAccountStore
from serve_app.storage.settings_repository import PgSettingsStore
from tests.api.conftest import TEST_LIMITS
from tests.api.test_auth import FAST, NO_CREDENTIALS
from tests.api.test_enfugue_validation import assert_enfugue_error

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

CACHE_S = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Replica:
    """One Ingress replica: its own app, accounts and settings cache over the shared database."""

    def __init__(self, pool, repo, models_dir: Path, tmp_path: Path, *, auth: bool) -> None:
        self.clock = Clock()
        self.accounts = AccountService(PgAccountStore(pool), FAST)
        settings = SettingsService(PgSettingsStore(pool), cache_s=CACHE_S, clock=self.clock, accounts=self.accounts)
        store = build_store(StorageArgs(url=(tmp_path / "files").as_uri()))
        jobs = JobService(
            repo=repo, catalog=build_catalog(str(models_dir), "demo-sd15"), store=store, limits=TEST_LIMITS
        )
        context = ApiContext(
            jobs=jobs, store=store, version="test", accounts=self.accounts, auth_enabled=auth, settings=settings
        )
        self.app = create_app(context)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://serve-app.test", headers=headers
        )

    def expire_cache(self) -> None:
        self.clock.now += CACHE_S + 0.1


async def test_auth_posted_on_one_replica_applies_on_the_other_and_logs_everyone_out(
    pool, repo, models_dir: Path, tmp_path: Path
) -> None:
    a = Replica(pool, repo, models_dir, tmp_path, auth=False)
    b = Replica(pool, repo, models_dir, tmp_path, auth=False)
    await a.accounts.create_user("root", "root-pw", "root-pw", admin=True)
    await a.accounts.create_user("alice", "alice-pw", "alice-pw")
    key = await a.accounts.create_api_key("alice", "script")
    async with a.client() as anon_a, b.client() as anon_b:
        assert (await anon_b.get("/api")).status_code == 200  # open, and b has read the settings
        status = (await anon_b.get("/api/v1/auth/status")).json()
        assert status["multiuser_enabled"] is False
        old_session = (await a.accounts.login("alice", "alice-pw")).token

        posted = await anon_a.post("/api/settings", json={"auth": True})
        assert posted.status_code == 200, posted.text
        assert posted.json()["data"]["auth"] is True

        # The replica that stored it: at once. The other: once its cache (CACHE_S) is stale, without a restart.
        assert_enfugue_error(await anon_a.get("/api"), 401, "AuthenticationError", NO_CREDENTIALS)
        assert (await anon_b.get("/api")).status_code == 200
        b.expire_cache()
        assert_enfugue_error(await anon_b.get("/api"), 401, "AuthenticationError", NO_CREDENTIALS)
        invokeai = await anon_b.get("/api/v1/queue/default/status")
        assert (invokeai.status_code, invokeai.json()) == (401, {"detail": NO_CREDENTIALS})
        assert (await anon_b.get("/api/v1/auth/status")).json()["multiuser_enabled"] is True

    # Sessions from before were revoked; the API key was kept.
    async with b.client(old_session) as stale, b.client(key.token) as script:
        assert_enfugue_error(await stale.get("/api"), 401, "AuthenticationError", NO_CREDENTIALS)
        assert (await script.get("/api")).status_code == 200
        # A non-admin may not change settings.
        assert_enfugue_error(await script.post("/api/settings", json={"auth": False}), 403, "PermissionError")

    root = (await b.accounts.login("root", "root-pw")).token
    async with b.client(root) as admin_b:
        shown = await admin_b.get("/api/settings")
        assert shown.json()["data"]["auth"] is True
        off = await admin_b.post("/api/settings", json={"auth": False})
        assert off.status_code == 200 and off.json()["data"]["auth"] is False
        # Posting `auth` revoked the poster's own session too, as Enfugue does; the server is open again.
        assert (await admin_b.get("/api")).status_code == 200
    assert await b.accounts.authenticate(root) is None
    a.expire_cache()
    async with a.client() as anon_a:
        assert (await anon_a.get("/api")).status_code == 200


async def test_auth_on_without_an_admin_is_refused(pool, repo, models_dir: Path, tmp_path: Path) -> None:
    replica = Replica(pool, repo, models_dir, tmp_path, auth=False)
    await replica.accounts.create_user("alice", "alice-pw", "alice-pw")  # not an admin
    async with replica.client() as anon:
        refused = await anon.post("/api/settings", json={"auth": "true"})
        assert_enfugue_error(refused, 400, "BadRequestError", "administrator with a password")
        replica.expire_cache()
        assert (await anon.get("/api")).status_code == 200
        assert (await anon.get("/api/settings")).json()["data"]["auth"] is False


async def test_the_deployment_setting_is_the_default_until_auth_is_posted(
    pool, repo, models_dir: Path, tmp_path: Path
) -> None:
    replica = Replica(pool, repo, models_dir, tmp_path, auth=True)  # SERVE_APP_AUTH=true
    await replica.accounts.create_user("root", "root-pw", "root-pw", admin=True)
    async with replica.client() as anon:
        assert_enfugue_error(await anon.get("/api"), 401, "AuthenticationError", NO_CREDENTIALS)
    token = (await replica.accounts.login("root", "root-pw")).token
    async with replica.client(token) as admin:
        # The settings service's own default is Enfugue's (false); GET reports what requests see.
        assert (await admin.get("/api/settings")).json()["data"]["auth"] is True
        assert (await admin.post("/api/settings", json={"auth": False})).json()["data"]["auth"] is False
    async with replica.client() as anon:
        assert (await anon.get("/api")).status_code == 200
