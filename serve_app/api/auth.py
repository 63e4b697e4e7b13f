"""Who a request acts as: a token from `Authorization: Bearer`, the `enfugue_token` cookie or `X-API-Key`.

With auth off (the default: `make run` stays open, as both peers ship) every request is the built-in admin.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request, Response

from serve_app.domain.accounts import Identity, IssuedToken
from serve_app.domain.errors import ServiceUnavailable, Unauthorized
from serve_app.services.accounts import AccountService

TOKEN_COOKIE = "enfugue_token"
NO_CREDENTIALS = "Invalid or no credentials supplied."

# Reachable without a token even with auth on: logging in, and result files that <img> tags load without headers
# (Enfugue leaves its image routes unsecured too; their names are unguessable uuids).
_PUBLIC_PREFIXES = ("/api/invocation/images/", "/api/invocation/thumbnails/")
_PUBLIC_PATHS = frozenset({"/api/login", "/api/v1/auth/login", "/api/v1/auth/status", "/api/v1/app/version"})


def is_public(path: str) -> bool:
    return path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES)


def request_token(request: Request) -> str | None:
    """The credential a request carries, in order: bearer header, API key header, cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    return request.cookies.get(TOKEN_COOKIE) or None


async def resolve_identity(
    request: Request, *, auth_enabled: bool, accounts: AccountService | None, default_owner: str
) -> Identity:
    """The caller; Unauthorized (401 in the dialect's format) when auth is on and no valid token came."""
    if not auth_enabled:
        return Identity(username=default_owner, admin=True)
    if accounts is None:
        raise ServiceUnavailable("Accounts are not configured on this server.")
    token = request_token(request)
    identity = await accounts.authenticate(token) if token else None
    if identity is None:
        raise Unauthorized(NO_CREDENTIALS)
    return identity


def set_token_cookie(response: Response, issued: IssuedToken) -> None:
    """The browser session cookie Enfugue's UI relies on; HttpOnly, so page scripts cannot read it."""
    expires = issued.record.expires_at
    max_age = int((expires - datetime.now(UTC)).total_seconds()) if expires is not None else None
    response.set_cookie(TOKEN_COOKIE, issued.token, max_age=max_age, path="/", httponly=True, samesite="lax")
