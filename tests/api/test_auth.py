"""Accounts over HTTP, auth on and off: 401 in each dialect's format, login tokens as bearer and cookie, API keys,
admin guards (403) in both dialects, and Enfugue invocations visible to their owner only.

Real app, real Postgres, real argon2 (cheap parameters); jobs are stored but never run (no dispatcher).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from argon2 import PasswordHasher

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.services.accounts import AccountService
from serve_app.services.jobs import JobService
from serve_app.serving.args import StorageArgs
from serve_app.serving.wiring import build_catalog, build_store
from serve_app.storage.account_repository import PgAccountStore
from serve_app.storage.passwords import Argon2Hasher
from tests.api.conftest import TEST_LIMITS
from tests.api.test_enfugue_validation import SMALL, assert_enfugue_error

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

FAST = Argon2Hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
NO_CREDENTIALS = "Invalid or no credentials supplied."


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Server:
    """The app with accounts `root` (admin) and `alice`, `bob` (users); `client()` opens a client for it."""

    def __init__(self, app, accounts: AccountService, clock: Clock) -> None:
        self.app = app
        self.accounts = accounts
        self.clock = clock

    def client(self, **kwargs) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://serve-app.test", **kwargs
        )

    async def token(self, username: str) -> str:
        return (await self.accounts.login(username, f"{username}-pw")).token

    async def bearer(self, username: str) -> httpx.AsyncClient:
        return self.client(headers={"Authorization": f"Bearer {await self.token(username)}"})


async def _server(pool, repo, models_dir: Path, tmp_path: Path, *, auth: bool) -> Server:
    clock = Clock()
    accounts = AccountService(PgAccountStore(pool), FAST, now=clock)
    for name, admin in (("root", True), ("alice", False), ("bob", False)):
        await accounts.create_user(name, f"{name}-pw", f"{name}-pw", admin=admin)
    store = build_store(StorageArgs(url=(tmp_path / "files").as_uri()))
    jobs = JobService(repo=repo, catalog=build_catalog(str(models_dir), "demo-sd15"), store=store, limits=TEST_LIMITS)
    context = ApiContext(jobs=jobs, store=store, version="test", accounts=accounts, auth_enabled=auth)
    return Server(create_app(context), accounts, clock)


@pytest_asyncio.fixture(loop_scope="session")
async def server(pool, repo, models_dir: Path, tmp_path: Path) -> Server:
    return await _server(pool, repo, models_dir, tmp_path, auth=True)


@pytest_asyncio.fixture(loop_scope="session")
async def anonymous(server) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as client:
        yield client


async def test_no_token_is_401_in_each_dialects_format(anonymous):
    assert_enfugue_error(await anonymous.get("/api"), 401, "AuthenticationError", NO_CREDENTIALS)
    assert_enfugue_error(await anonymous.get("/api/invocation"), 401, "AuthenticationError", NO_CREDENTIALS)
    response = await anonymous.get("/api/v2/models/")
    assert response.status_code == 401
    assert response.json() == {"detail": NO_CREDENTIALS}
    assert response.headers["www-authenticate"] == "Bearer"
    bad = await anonymous.get("/api/v1/queue/default/status", headers={"Authorization": "Bearer not-a-token"})
    assert (bad.status_code, bad.json()) == (401, {"detail": NO_CREDENTIALS})
    # Result files stay public (<img> tags send no headers): an unknown one is 404, not 401.
    assert (await anonymous.get("/api/invocation/images/nope.png")).status_code == 404


async def test_login_token_works_as_bearer_and_as_cookie(server, anonymous, pool):
    response = await anonymous.post("/api/login", json={"username": "ALICE", "password": "alice-pw"})
    assert response.status_code == 200, response.text
    body = response.json()
    token = body["data"]["attributes"]["access_token"]
    assert body["meta"] == {"params": {}}
    assert body["data"]["type"] == "AuthenticationToken"
    attributes = body["data"]["attributes"]
    assert attributes["token_type"] == "Bearer"
    assert attributes["expires"] == (server.clock.now + timedelta(hours=730)).replace(tzinfo=None).isoformat()
    [user] = body["data"]["include"]["user"]
    assert user["attributes"]["username"] == "alice" and user["attributes"]["admin"] is False
    assert attributes["user_id"] == user["attributes"]["id"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"enfugue_token={token};") and "HttpOnly" in cookie
    # Only the token's sha256 is stored.
    assert await pool.fetchval("SELECT count(*) FROM auth_tokens WHERE token_hash = $1", token) == 0

    async with server.client(headers={"Authorization": f"Bearer {token}"}) as client:
        assert (await client.get("/api")).status_code == 200
        assert (await client.get("/api/v2/models/")).status_code == 503  # Past auth; no registry in this app.
    async with server.client(cookies={"enfugue_token": token}) as client:
        assert (await client.get("/api")).status_code == 200


async def test_login_by_form_and_failures(anonymous):
    form = await anonymous.post("/api/login", data={"username": "bob", "password": "bob-pw"})
    assert form.status_code == 200
    assert form.json()["data"]["include"]["user"][0]["attributes"]["username"] == "bob"
    wrong = await anonymous.post("/api/login", json={"username": "bob", "password": "nope"})
    assert_enfugue_error(wrong, 401, "AuthenticationError", "Incorrect username or password.")
    missing = await anonymous.post("/api/login", json={"username": "bob"})
    assert_enfugue_error(missing, 401, "AuthenticationError", "Missing username or password.")


async def test_an_expired_token_is_401(server):
    async with await server.bearer("alice") as client:
        assert (await client.get("/api")).status_code == 200
        server.clock.now += timedelta(hours=731)
        assert_enfugue_error(await client.get("/api"), 401, "AuthenticationError", NO_CREDENTIALS)


async def test_api_keys_work_until_revoked(server):
    async with await server.bearer("alice") as alice:
        created = await alice.post("/api/keys", json={"name": "ci"})
        assert created.status_code == 200
        key = created.json()["data"]
        assert key["name"] == "ci" and len(key["key"]) >= 43
        listed = (await alice.get("/api/keys")).json()
        assert [item["id"] for item in listed["data"]] == [key["id"]] and "key" not in listed["data"][0]
        async with server.client(headers={"X-API-Key": key["key"]}) as by_key:
            assert (await by_key.get("/api")).status_code == 200
            async with await server.bearer("bob") as bob:
                assert (await bob.delete(f"/api/keys/{key['id']}")).status_code == 404
            assert (await by_key.get("/api")).status_code == 200
            assert (await alice.delete(f"/api/keys/{key['id']}")).status_code == 200
            assert_enfugue_error(await by_key.get("/api"), 401, "AuthenticationError", NO_CREDENTIALS)


async def test_non_admins_get_403_on_guarded_routes_of_both_dialects(server):
    async with await server.bearer("alice") as alice:
        assert_enfugue_error(await alice.get("/api/users"), 403, "PermissionError", "alice")
        response = await alice.post("/api/models", json={"name": "x", "checkpoint": "y.safetensors"})
        assert_enfugue_error(response, 403, "PermissionError")
        response = await alice.post("/api/v2/models/empty_model_cache")
        assert (response.status_code, response.json()) == (403, {"detail": "User alice is not authorized to do this."})
        assert (await alice.delete("/api/v2/models/i/some-key")).status_code == 403
        assert (
            await alice.post("/api/v1/download_queue/i/", json={"source": "http://x/y", "dest": "/tmp"})
        ).status_code == 403
    async with await server.bearer("root") as root:
        # The admin passes the guard (and meets the 503 of a server without a model registry).
        assert (await root.post("/api/v2/models/empty_model_cache")).status_code == 503
        assert (await root.get("/api/users")).status_code == 200


async def test_user_management_by_an_admin(server):
    async with await server.bearer("root") as root:
        listed = (await root.get("/api/users")).json()
        assert [user["attributes"]["username"] for user in listed["data"]] == ["alice", "bob", "root"]
        assert listed["meta"]["count"] == 3
        assert all("password" not in str(user) for user in listed["data"])

        body = {"username": "carol", "new_password": "c", "repeat_password": "c", "first_name": "Carol"}
        created = await root.post("/api/users", json=body)
        assert created.status_code == 200
        assert created.json()["data"]["attributes"]["first_name"] == "Carol"
        assert_enfugue_error(
            await root.post("/api/users", json=body), 400, "BadRequestError", "User carol already exists."
        )
        mismatch = {"username": "dave", "new_password": "a", "repeat_password": "b"}
        assert_enfugue_error(
            await root.post("/api/users", json=mismatch), 400, "BadRequestError", "Passwords do not match."
        )

        patched = await root.patch(
            "/api/users/carol", json={"admin": True, "new_password": "d", "repeat_password": "d"}
        )
        assert patched.json()["data"]["attributes"]["admin"] is True
        [one] = (await root.get("/api/users/CAROL")).json()["data"]
        assert one["attributes"]["username"] == "carol"
        await server.accounts.login("carol", "d")

        assert (await root.delete("/api/users/carol")).status_code == 200
        assert_enfugue_error(
            await root.get("/api/users/carol"), 404, "NotFoundError", "No User found with username=carol"
        )
        assert_enfugue_error(await root.delete("/api/users/root"), 400, "BadRequestError", "last administrator")


async def test_invocations_are_visible_to_their_owner_only(server):
    async with await server.bearer("alice") as alice, await server.bearer("bob") as bob:
        submitted = await alice.post("/api/invoke", json=SMALL)
        assert submitted.status_code == 200, submitted.text
        uid = submitted.json()["data"]["uuid"]
        assert (await alice.get(f"/api/invocation/{uid}")).status_code == 200
        assert [item["uuid"] for item in (await alice.get("/api/invocation")).json()["data"]] == [uid]

        assert (await bob.get("/api/invocation")).json()["data"] == []
        for response in (
            await bob.get(f"/api/invocation/{uid}"),
            await bob.post(f"/api/invocation/{uid}/cancel"),
            await bob.delete(f"/api/invocation/{uid}"),
        ):
            assert_enfugue_error(response, 404, "NotFoundError")
        # Bob's attempts changed nothing: Alice still sees her queued job, and may delete it.
        assert (await alice.get(f"/api/invocation/{uid}")).json()["data"]["status"] == "queued"
        assert (await alice.delete(f"/api/invocation/{uid}")).status_code == 200
        assert (await alice.get(f"/api/invocation/{uid}")).status_code == 404


async def test_with_auth_off_every_request_is_the_admin(pool, repo, models_dir: Path, tmp_path: Path):
    server = await _server(pool, repo, models_dir, tmp_path, auth=False)
    async with server.client() as client:
        assert (await client.get("/api")).status_code == 200
        assert (await client.get("/api/users")).status_code == 200
        submitted = await client.post("/api/invoke", json=SMALL)
        assert submitted.status_code == 200
        job = await repo.get(uuid.UUID(submitted.json()["data"]["uuid"]))
        assert job.owner == "admin"


async def test_invokeai_login_me_and_logout(server, anonymous):
    status = await anonymous.get("/api/v1/auth/status")
    assert status.json() == {
        "setup_required": False,
        "multiuser_enabled": True,
        "strict_password_checking": False,
        "admin_email": None,
    }
    wrong = await anonymous.post("/api/v1/auth/login", json={"email": "alice", "password": "nope"})
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "Incorrect email or password"})
    assert wrong.headers["www-authenticate"] == "Bearer"

    response = await anonymous.post("/api/v1/auth/login", json={"email": "Alice", "password": "alice-pw"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] == 730 * 3600
    assert response.headers["set-cookie"].startswith(f"enfugue_token={body['token']};")
    assert (body["user"]["email"], body["user"]["is_admin"], body["user"]["is_active"]) == ("alice", False, True)
    async with server.client(headers={"Authorization": f"Bearer {body['token']}"}) as alice:
        me = (await alice.get("/api/v1/auth/me")).json()
        assert (me["user_id"], me["email"]) == (body["user"]["user_id"], "alice")
        assert (await alice.post("/api/v1/auth/logout")).json() == {"success": True}
        assert (await alice.get("/api/v1/auth/me")).status_code == 401


async def test_logging_out_with_an_api_key_keeps_the_key(server):
    key = await server.accounts.create_api_key("bob", "ci")
    async with server.client(headers={"X-API-Key": key.token}) as bob:
        assert (await bob.post("/api/v1/auth/logout")).status_code == 200
        assert (await bob.get("/api/v1/auth/me")).json()["email"] == "bob"


async def test_invokeai_auth_routes_with_auth_off(pool, repo, models_dir: Path, tmp_path: Path):
    server = await _server(pool, repo, models_dir, tmp_path, auth=False)
    async with server.client() as client:
        assert (await client.get("/api/v1/auth/status")).json()["multiuser_enabled"] is False
        me = (await client.get("/api/v1/auth/me")).json()
        assert (me["user_id"], me["is_admin"]) == ("admin", True)
        login = await client.post("/api/v1/auth/login", json={"email": "alice", "password": "alice-pw"})
        assert login.status_code == 403


async def test_users_by_the_generic_rest_query_language(server):
    async with await server.bearer("root") as root:
        admins = (await root.get("/api/users", params={"filter": "admin:true"})).json()
        assert [user["attributes"]["username"] for user in admins["data"]] == ["root"]
        page = (await root.get("/api/users", params={"sort": "username:desc", "limit": 1, "offset": 1})).json()
        assert [user["attributes"]["username"] for user in page["data"]] == ["bob"]
        assert page["meta"]["count"] == 3  # before limit and offset
        searched = (await root.get("/api/users", params=[("ilike", "username:LIC"), ("ilike", "username:ob")])).json()
        assert sorted(user["attributes"]["username"] for user in searched["data"]) == ["alice", "bob"]
        hostile = (await root.get("/api/users", params={"filter": "username:x' OR '1'='1"})).json()
        assert hostile["data"] == [] and hostile["meta"]["count"] == 0
        for params in ({"filter": "password_hash:x"}, {"sort": "password_hash"}, {"include": "permissions"}):
            assert_enfugue_error(await root.get("/api/users", params=params), 400, "BadRequestError", "")
