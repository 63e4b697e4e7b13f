"""Enfugue accounts: `POST /api/login`, `/api/users[/{username}]`, `GET /self` (pibble's UserExtensionServer, not
under /api), and serve-app's API keys (`/api/keys`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serve_app.api.auth import set_token_cookie
from serve_app.api.deps import AccountsDep, AdminDep, ContextDep, IdentityDep
from serve_app.api.enfugue.routes import envelope, json_object
from serve_app.domain.accounts import IssuedToken, TokenRecord, User
from serve_app.domain.errors import InvalidRequest
from serve_app.domain.rest_query import RestQuery, parse_rest_query

router = APIRouter(prefix="/api", tags=["enfugue"])
self_router = APIRouter(tags=["enfugue"])

# Relationships `?include=` may name on users. Users carry an `admin` flag, which stands for pibble's membership
# of the permission group labelled "admin" (enfugue-api.md §3); the include renders that membership the way the
# Enfugue UI reads it (`permission_groups[i].group[0].label === "admin"`, controller/system/02-users.mjs):
#   "include": {"permission_groups": [
#       {"type": "UserPermissionGroup", "attributes": {"user_id": 7, "group_id": 1},
#        "include": {"group": [{"type": "PermissionGroup", "attributes": {"id": 1, "label": "admin"}}]}}]}
# (`group` only when `permission_groups.group` is included too). There are no other groups: a non-admin's list
# is empty.
PERMISSION_GROUPS = "permission_groups"
PERMISSION_GROUPS_GROUP = "permission_groups.group"
_USER_INCLUDES = frozenset({PERMISSION_GROUPS, PERMISSION_GROUPS_GROUP})
ADMIN_GROUP = {"type": "PermissionGroup", "attributes": {"id": 1, "label": "admin"}}
# With auth off every request is the built-in admin, who has no user row (Enfugue's `noauth` user has id 0).
_BUILT_IN_ID = 0


def _when(value: datetime | None) -> str | None:
    # Pibble serialises datetimes as ISO-8601 without a zone; ours are UTC.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() if value is not None else None


def user_object(user: User, includes: Sequence[str] = ()) -> dict[str, Any]:
    """A pibble ORM object (enfugue-api.md §1.2); `admin` stands for the `admin` group membership, which
    `includes` (see PERMISSION_GROUPS) may also render as pibble's group objects."""
    result: dict[str, Any] = {
        "type": "User",
        "attributes": {
            "id": user.id,
            "username": user.username,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "last_login": _when(user.last_login),
            "admin": user.admin,
        },
    }
    if includes:
        result["include"] = {
            PERMISSION_GROUPS: _permission_groups(user, with_group=PERMISSION_GROUPS_GROUP in includes)
        }
    return result


def _permission_groups(user: User, *, with_group: bool) -> list[dict[str, Any]]:
    if not user.admin:
        return []
    membership: dict[str, Any] = {"type": "UserPermissionGroup", "attributes": {"user_id": user.id, "group_id": 1}}
    if with_group:
        membership["include"] = {"group": [ADMIN_GROUP]}
    return [membership]


def token_object(issued: IssuedToken) -> dict[str, Any]:
    """The AuthenticationToken object of the Enfugue wiki's login example, plus its user under `include`."""
    return {
        "type": "AuthenticationToken",
        "attributes": {
            "id": issued.record.id,
            "access_token": issued.token,
            "token_type": "Bearer",
            "created": _when(issued.record.created_at),
            "expires": _when(issued.record.expires_at),
            "user_id": issued.user.id,
        },
        "include": {"user": [user_object(issued.user)]},
    }


def _key_object(record: TokenRecord, key: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "created": _when(record.created_at),
        "last_used": _when(record.last_used_at),
    }
    if key is not None:
        data["key"] = key  # Shown once: only its hash is stored.
    return data


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise InvalidRequest(f"{key} must be a string.", field=key)
    return str(value)


def _flag(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    # Enfugue's deserializer turns form strings such as "true"/"no" into booleans.
    text = str(value).strip().lower()
    if text in ("true", "yes", "t", "y", "1"):
        return True
    if text in ("false", "no", "f", "n", "0"):
        return False
    raise InvalidRequest(f"{key} must be a boolean.", field=key)


async def _json_or_form(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    # `curl -d '{...}'` (the Enfugue wiki's examples) labels a JSON body as a form; Enfugue parses it as JSON.
    if content_type.startswith("application/x-www-form-urlencoded") and (await request.body()).lstrip()[:1] == b"{":
        return await json_object(request)
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/")):
        form = await request.form()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    return await json_object(request)


@router.post("/login", summary="Log in: an access token (also set as the enfugue_token cookie)")
async def login(request: Request, accounts: AccountsDep) -> JSONResponse:
    body = await _json_or_form(request)
    issued = await accounts.login(_text(body, "username"), _text(body, "password"))
    response = envelope(request, token_object(issued))
    set_token_cookie(response, issued)
    return response


def _query(request: Request) -> RestQuery:
    query = parse_rest_query(request.query_params.multi_items())
    for name in query.includes:
        if name not in _USER_INCLUDES:
            # The query language's answer to a relationship the class does not have.
            raise InvalidRequest(f"Unknown or bad relationship {name}", field="include")
    return query


@router.get("/users", summary="Users, by the generic REST query language", dependencies=[AdminDep])
async def list_users(request: Request, accounts: AccountsDep) -> JSONResponse:
    query = _query(request)
    users, count = await accounts.query_users(query)
    return envelope(request, [user_object(user, query.includes) for user in users], count=count)


@router.get("/users/{username}", summary="One user (a one-item list, as Enfugue's REST GET)", dependencies=[AdminDep])
async def get_user(request: Request, username: str, accounts: AccountsDep) -> JSONResponse:
    query = _query(request)  # a bad query string is a 400 here too
    return envelope(request, [user_object(await accounts.get_user(username), query.includes)], count=1)


@self_router.get("/self", summary="The caller, as a User object (the built-in admin with authentication off)")
async def current_user(request: Request, identity: IdentityDep, context: ContextDep) -> JSONResponse:
    """pibble's UserExtensionServer route: the token's user. With auth off nobody logs in, so it is the built-in
    admin every request acts as (no row: id 0, as Enfugue's `noauth` user)."""
    includes = _query(request).includes
    if identity.user_id is None:
        user = User(id=_BUILT_IN_ID, username=identity.username, admin=True, created_at=context.started_at)
    else:
        accounts = context.accounts
        assert accounts is not None  # a token was checked against them
        user = await accounts.get_user(identity.username)
    return envelope(request, user_object(user, includes))


@router.post("/users", summary="Create a user", dependencies=[AdminDep])
async def create_user(request: Request, accounts: AccountsDep) -> JSONResponse:
    body = await _json_or_form(request)
    user = await accounts.create_user(
        _text(body, "username"),
        _text(body, "new_password"),
        _text(body, "repeat_password"),
        admin=bool(_flag(body, "admin")),
        first_name=_text(body, "first_name"),
        last_name=_text(body, "last_name"),
    )
    return envelope(request, user_object(user))


@router.patch("/users/{username}", summary="Change a user", dependencies=[AdminDep])
async def update_user(request: Request, username: str, accounts: AccountsDep) -> JSONResponse:
    body = await _json_or_form(request)
    user = await accounts.update_user(
        username,
        new_password=_text(body, "new_password"),
        repeat_password=_text(body, "repeat_password"),
        admin=_flag(body, "admin"),
        first_name=_text(body, "first_name"),
        last_name=_text(body, "last_name"),
    )
    return envelope(request, user_object(user))


@router.delete("/users/{username}", summary="Delete a user (never the last admin)", dependencies=[AdminDep])
async def delete_user(request: Request, username: str, accounts: AccountsDep) -> JSONResponse:
    await accounts.delete_user(username)
    return envelope(request, None)


@router.get("/keys", summary="The caller's API keys (serve-app extension)")
async def list_keys(request: Request, identity: IdentityDep, accounts: AccountsDep) -> JSONResponse:
    keys = await accounts.list_api_keys(identity.username)
    return envelope(request, [_key_object(key) for key in keys], count=len(keys))


@router.post("/keys", summary="A new API key for the caller, shown once (serve-app extension)")
async def create_key(request: Request, identity: IdentityDep, accounts: AccountsDep) -> JSONResponse:
    body = await json_object(request)
    issued = await accounts.create_api_key(identity.username, _text(body, "name"))
    return envelope(request, _key_object(issued.record, issued.token))


@router.delete("/keys/{key_id}", summary="Revoke one of the caller's API keys (serve-app extension)")
async def revoke_key(request: Request, key_id: int, identity: IdentityDep, accounts: AccountsDep) -> JSONResponse:
    await accounts.revoke_api_key(identity.username, key_id)
    return envelope(request, None)
