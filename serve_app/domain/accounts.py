"""Accounts: users, who a request acts as, login tokens and API keys, and the ports that store them."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Literal, Protocol

from serve_app.domain.rest_query import RestQuery

TokenKind = Literal["session", "api_key"]


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """An account; `admin` is Enfugue's membership of the group `admin`. The password hash never leaves storage
    except through `AccountStore.credentials`."""

    id: int
    username: str
    admin: bool
    created_at: datetime
    first_name: str | None = None
    last_name: str | None = None
    last_login: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts as. `user_id` is None for the built-in admin of a server running without auth."""

    username: str
    admin: bool
    user_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored session token or API key (only its sha256 is stored, so the token itself is not here)."""

    id: int
    user_id: int
    kind: TokenKind
    created_at: datetime
    name: str | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just minted: the only time its clear text exists on the server."""

    token: str
    record: TokenRecord
    user: User


class PasswordHasher(Protocol):
    """A password hashing scheme (argon2 in production)."""

    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool:
        """False for a wrong password or an unreadable hash; never raises for either."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class AccountStore(Protocol):
    """Tables `users` and `auth_tokens`. Usernames match ignoring case; tokens are looked up by their sha256."""

    async def create_user(
        self,
        username: str,
        password_hash: str,
        *,
        admin: bool,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> User | None:
        """None when the username is taken (in any case)."""
        ...

    async def get_user(self, username: str) -> User | None: ...

    async def credentials(self, username: str) -> tuple[User, str] | None:
        """The user and their password hash, for a login."""
        ...

    async def list_users(self) -> list[User]:
        """By username."""
        ...

    async def query_users(self, query: RestQuery) -> tuple[list[User], int]:
        """Enfugue's generic REST GET: the page of users and the count before limit/offset."""
        ...

    async def update_user(
        self,
        username: str,
        *,
        password_hash: str | None = None,
        admin: bool | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> User | Literal["missing", "last_admin"]:
        """Change the given fields (None: unchanged); nothing changes when it would demote the last admin."""
        ...

    async def delete_user(self, username: str) -> Literal["deleted", "missing", "last_admin"]:
        """Delete a user and their tokens, unless it is the last admin."""
        ...

    async def count_users(self) -> int: ...

    async def count_admins(self) -> int:
        """Admins who can log in (a non-empty password hash)."""
        ...

    async def record_login(self, user_id: int, at: datetime) -> None: ...

    async def insert_token(
        self,
        user_id: int,
        token_hash: str,
        kind: TokenKind,
        *,
        name: str | None,
        created_at: datetime,
        expires_at: datetime | None,
    ) -> TokenRecord: ...

    async def find_token(self, token_hash: str) -> tuple[TokenRecord, User] | None: ...

    async def touch_token(self, token_id: int, at: datetime) -> None:
        """Set last_used_at."""
        ...

    async def delete_token(self, token_hash: str) -> bool: ...

    async def list_tokens(self, user_id: int, kind: TokenKind) -> list[TokenRecord]:
        """Newest first."""
        ...

    async def delete_token_by_id(self, user_id: int, token_id: int) -> bool:
        """Only one of this user's tokens."""
        ...

    async def delete_tokens(self, kind: TokenKind) -> int:
        """Every user's tokens of one kind; how many were deleted."""
        ...
