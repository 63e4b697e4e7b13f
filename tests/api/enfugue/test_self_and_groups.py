"""`GET /self` (pibble's UserExtensionServer route, outside /api) and `?include=permission_groups[.group]` on
`/api/users`: the shapes the Enfugue UI reads (`permission_groups[i].group[0].label === "admin"`). Real app,
real Postgres."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.test_auth import NO_CREDENTIALS, _server
from tests.api.test_enfugue_validation import assert_enfugue_error

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

INCLUDE = "include=permission_groups&include=permission_groups.group"
ADMIN_MEMBERSHIP_GROUP = [{"type": "PermissionGroup", "attributes": {"id": 1, "label": "admin"}}]


async def test_self_is_the_token_user_and_401_without_one(pool, repo, models_dir: Path, tmp_path: Path) -> None:
    server = await _server(pool, repo, models_dir, tmp_path, auth=True)
    async with server.client() as anonymous:
        assert_enfugue_error(await anonymous.get("/self"), 401, "AuthenticationError", NO_CREDENTIALS)
    async with await server.bearer("alice") as alice:
        response = await alice.get("/self")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["meta"] == {"params": {}}
        me = body["data"]
        assert me["type"] == "User" and "include" not in me
        assert me["attributes"]["username"] == "alice" and me["attributes"]["admin"] is False
        # The same object as the admin-only user route gives for her.
        async with await server.bearer("root") as root:
            [listed] = (await root.get("/api/users/alice")).json()["data"]
        assert listed == me
        assert me["attributes"]["last_login"] is not None  # the login that made the token
        included = (await alice.get(f"/self?{INCLUDE}")).json()["data"]
        assert included["include"] == {"permission_groups": []}


async def test_self_with_auth_off_is_the_built_in_admin(pool, repo, models_dir: Path, tmp_path: Path) -> None:
    server = await _server(pool, repo, models_dir, tmp_path, auth=False)
    async with server.client() as anonymous:
        response = await anonymous.get(f"/self?{INCLUDE}")
        assert response.status_code == 200, response.text
        me = response.json()["data"]
        assert me["attributes"]["id"] == 0 and me["attributes"]["username"] == "admin"
        assert me["attributes"]["admin"] is True
        [membership] = me["include"]["permission_groups"]
        assert membership["include"]["group"] == ADMIN_MEMBERSHIP_GROUP


async def test_users_include_permission_groups(pool, repo, models_dir: Path, tmp_path: Path) -> None:
    server = await _server(pool, repo, models_dir, tmp_path, auth=True)
    async with await server.bearer("root") as root:
        response = await root.get(f"/api/users?{INCLUDE}&sort=username")
        assert response.status_code == 200, response.text
        users = {user["attributes"]["username"]: user for user in response.json()["data"]}
        assert set(users) == {"alice", "bob", "root"}
        admin = users["root"]
        [membership] = admin["include"]["permission_groups"]
        assert membership == {
            "type": "UserPermissionGroup",
            "attributes": {"user_id": admin["attributes"]["id"], "group_id": 1},
            "include": {"group": ADMIN_MEMBERSHIP_GROUP},
        }
        assert users["alice"]["include"] == {"permission_groups": []}

        # Without `.group` the membership comes without its group; without any include, no `include` at all.
        [one] = (await root.get("/api/users/root?include=permission_groups")).json()["data"]
        assert one["include"]["permission_groups"][0] == {
            "type": "UserPermissionGroup",
            "attributes": {"user_id": admin["attributes"]["id"], "group_id": 1},
        }
        [plain] = (await root.get("/api/users/root")).json()["data"]
        assert "include" not in plain

        unknown = await root.get("/api/users?include=permissions")
        assert_enfugue_error(unknown, 400, "BadRequestError", "Unknown or bad relationship permissions")
        assert_enfugue_error(await root.get("/self?include=nope"), 400, "BadRequestError", "nope")
