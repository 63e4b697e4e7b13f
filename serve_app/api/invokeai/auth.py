"""InvokeAI 6.12's multi-user auth routes (`/api/v1/auth/...`) over serve-app's accounts.

Differences, on purpose: tokens are opaque random strings (not JWTs) checked against the database, so `logout`
really revokes the token; accounts have usernames, not emails, so `email` is the username.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from serve_app.api.auth import TOKEN_COOKIE, request_token, set_token_cookie
from serve_app.api.deps import AccountsDep, ContextDep, IdentityDep
from serve_app.api.errors import HttpError
from serve_app.domain.accounts import Identity, User
from serve_app.domain.errors import Unauthorized

router = APIRouter(prefix="/api/v1/auth", tags=["authentication"])

_INCORRECT = "Incorrect email or password"


class UserDTO(BaseModel):
    user_id: str
    email: str
    display_name: str | None = None
    is_admin: bool = False
    is_active: bool = True
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None = None

    @classmethod
    def from_domain(cls, user: User) -> UserDTO:
        names = [name for name in (user.first_name, user.last_name) if name]
        return cls(
            user_id=str(user.id),
            email=user.username,
            display_name=" ".join(names) or None,
            is_admin=user.admin,
            created_at=user.created_at,
            updated_at=user.created_at,
            last_login_at=user.last_login,
        )


class LoginRequest(BaseModel):
    email: str | None = Field(default=None, description="The username (accounts here have no email)")
    username: str | None = None
    password: str
    remember_me: bool = False


class LoginResponse(BaseModel):
    token: str
    user: UserDTO
    expires_in: int


class SetupStatusResponse(BaseModel):
    setup_required: bool
    multiuser_enabled: bool
    strict_password_checking: bool
    admin_email: str | None = None


class LogoutResponse(BaseModel):
    success: bool


@router.get("/status", operation_id="get_setup_status", response_model=SetupStatusResponse)
async def get_setup_status(context: ContextDep) -> SetupStatusResponse:
    # The first admin comes from the server's settings, so setup through the API is never required.
    return SetupStatusResponse(
        setup_required=False, multiuser_enabled=await context.auth_active(), strict_password_checking=False
    )


@router.post("/login", operation_id="login", response_model=LoginResponse)
async def login(body: LoginRequest, response: Response, context: ContextDep, accounts: AccountsDep) -> LoginResponse:
    if not await context.auth_active():
        raise HttpError(403, "Multiuser mode is disabled. Authentication is not required in single-user mode.")
    try:
        issued = await accounts.login(body.email or body.username, body.password)
    except Unauthorized:
        raise Unauthorized(_INCORRECT) from None
    # As InvokeAI's media cookie: <img> tags load images without an Authorization header.
    set_token_cookie(response, issued)
    expires = issued.record.expires_at
    expires_in = int((expires - issued.record.created_at).total_seconds()) if expires is not None else 0
    return LoginResponse(token=issued.token, user=UserDTO.from_domain(issued.user), expires_in=expires_in)


@router.post("/logout", operation_id="logout", response_model=LogoutResponse)
async def logout(request: Request, response: Response, identity: IdentityDep, accounts: AccountsDep) -> LogoutResponse:
    token = request_token(request)
    if token is not None and identity.user_id is not None:
        await accounts.logout(token)
    response.delete_cookie(TOKEN_COOKIE, path="/")
    return LogoutResponse(success=True)


@router.get("/me", operation_id="get_current_user_info", response_model=UserDTO)
async def me(identity: IdentityDep, context: ContextDep) -> UserDTO:
    if identity.user_id is None or context.accounts is None:
        return _builtin(identity, context.started_at)
    return UserDTO.from_domain(await context.accounts.get_user(identity.username))


def _builtin(identity: Identity, since: datetime) -> UserDTO:
    """The caller when auth is off: the built-in admin, who has no account row (InvokeAI's `system` user)."""
    return UserDTO(
        user_id=identity.username, email=identity.username, is_admin=True, created_at=since, updated_at=since
    )
