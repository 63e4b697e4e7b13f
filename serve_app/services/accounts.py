"""AccountService: users (Enfugue's `/api/users` rules), login sessions, API keys, and token authentication."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from serve_app.domain.accounts import (
    AccountStore,
    Identity,
    IssuedToken,
    PasswordHasher,
    TokenKind,
    TokenRecord,
    User,
)
from serve_app.domain.errors import InvalidRequest, NotFound, Unauthorized
from serve_app.domain.ports import BusMessage, EventBus
from serve_app.domain.rest_query import RestQuery

log = logging.getLogger(__name__)

_USERNAME = re.compile(r"^[a-zA-Z0-9_]+$")
# Enfugue's token lifetime (pibble's default `expires`).
DEFAULT_SESSION_TTL = timedelta(hours=730)
# How stale a token's `last_used_at` may get before a request refreshes it.
TOUCH_INTERVAL = timedelta(minutes=1)
# Published when every login session is revoked: each Ingress's Socket.IO hub then drops its connections, which
# were accepted under the old rules (or with a token that no longer exists); clients reconnect and authenticate.
SESSIONS_REVOKED_EVENT = "serve_app_sessions_revoked"
# Published when one user's credentials or role change (deleted, promoted or demoted, password changed, an API key
# revoked): the hubs drop that user's connections, whose identity was checked before the change. Never forwarded.
USER_CHANGED_EVENT = "serve_app_user_changed"
INCORRECT_LOGIN = "Incorrect username or password."


def token_hash(token: str) -> str:
    """What is stored for a token: its sha256. Tokens are random (256 bits), so no salt or slow hash is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def _user_not_found(username: str) -> NotFound:
    # Enfugue's generic REST wording for a scoped lookup.
    return NotFound(f"No User found with username={username}")


class AccountService:
    """Every account operation; the HTTP layers only translate shapes."""

    def __init__(
        self,
        store: AccountStore,
        hasher: PasswordHasher,
        *,
        session_ttl: timedelta = DEFAULT_SESSION_TTL,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        bus: EventBus | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._hasher = hasher
        self._session_ttl = session_ttl
        self._now = now
        self._dummy_hash: str | None = None

    # Users

    async def create_user(
        self,
        username: str | None,
        new_password: str | None,
        repeat_password: str | None,
        *,
        admin: bool = False,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> User:
        """Enfugue's POST /api/users checks, in its order, with its messages."""
        if not username:
            raise InvalidRequest("Username is required.", field="username")
        if not _USERNAME.match(username):
            raise InvalidRequest("Usernames may contain only letters, digits and underscores.", field="username")
        if await self._store.get_user(username) is not None:
            raise InvalidRequest(f"User {username} already exists.", field="username")
        if not new_password:
            raise InvalidRequest("Password is required.", field="new_password")
        if new_password != repeat_password:
            raise InvalidRequest("Passwords do not match.", field="repeat_password")
        user = await self._store.create_user(
            username, self._hasher.hash(new_password), admin=admin, first_name=first_name, last_name=last_name
        )
        if user is None:  # Created concurrently between the check and the insert.
            raise InvalidRequest(f"User {username} already exists.", field="username")
        return user

    async def update_user(
        self,
        username: str,
        *,
        new_password: str | None = None,
        repeat_password: str | None = None,
        admin: bool | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> User:
        """Change what is given; the password only when both password fields are (as Enfugue)."""
        password_hash = None
        if new_password is not None and repeat_password is not None:
            if not new_password:
                raise InvalidRequest("Password is required.", field="new_password")
            if new_password != repeat_password:
                raise InvalidRequest("Passwords do not match.", field="repeat_password")
            password_hash = self._hasher.hash(new_password)
        result = await self._store.update_user(
            username, password_hash=password_hash, admin=admin, first_name=first_name, last_name=last_name
        )
        if result == "missing":
            raise _user_not_found(username)
        if result == "last_admin":
            raise InvalidRequest(f"User {username} is the last administrator and cannot be demoted.")
        if admin is not None or password_hash is not None:
            await self._user_changed(result.username)
        return result

    async def delete_user(self, username: str) -> None:
        result = await self._store.delete_user(username)
        if result == "missing":
            raise _user_not_found(username)
        if result == "last_admin":
            raise InvalidRequest(f"User {username} is the last administrator and cannot be deleted.")
        await self._user_changed(username)

    async def get_user(self, username: str) -> User:
        user = await self._store.get_user(username)
        if user is None:
            raise _user_not_found(username)
        return user

    async def list_users(self) -> list[User]:
        return await self._store.list_users()

    async def query_users(self, query: RestQuery) -> tuple[list[User], int]:
        """Users by Enfugue's generic REST query language (filter, ilike, sort, limit, offset)."""
        return await self._store.query_users(query)

    async def bootstrap_admin(self, username: str, password: str) -> User | None:
        """Create the first admin when there are no users at all (a server just switched to auth); None when users
        exist already, so a changed setting never resets anyone's password."""
        if await self._store.count_users() > 0:
            return None
        if not password:
            raise InvalidRequest("Authentication is on and no user exists: set SERVE_APP_ADMIN_PASSWORD.")
        user = await self._store.create_user(username, self._hasher.hash(password), admin=True)
        if user is not None:
            log.info("created the first administrator %r", username)
        return user

    # Authentication switched at runtime (`auth` through `/api/settings`)

    async def check_can_enable_auth(self) -> None:
        """InvalidRequest unless some admin can log in: turning auth on without one would lock everybody out."""
        if await self._store.count_admins() == 0:
            raise InvalidRequest(
                "Authentication needs an administrator with a password: create one before turning it on.",
                field="auth",
            )

    async def revoke_sessions(self) -> int:
        """Delete every login session (as Enfugue does whenever `auth` is posted: everyone logs in again). API
        keys stay: they are credentials their owners created on purpose for scripts, which would otherwise break
        silently; revoke one by its id."""
        count = await self._store.delete_tokens("session")
        log.info("authentication setting changed: revoked %d login sessions", count)
        if self._bus is not None:
            await self._bus.publish(BusMessage(event=SESSIONS_REVOKED_EVENT, room=None, data={}))
        return count

    # Sessions

    async def login(self, username: str | None, password: str | None) -> IssuedToken:
        """A new session token; Unauthorized with Enfugue's messages. The username matches ignoring case."""
        if not username or not password:
            raise Unauthorized("Missing username or password.")
        found = await self._store.credentials(username)
        if found is None:
            # Spend the same time as a wrong password, so a response time does not tell which usernames exist.
            self._hasher.verify(self._dummy(), password)
            raise Unauthorized(INCORRECT_LOGIN)
        user, stored_hash = found
        if not self._hasher.verify(stored_hash, password):
            raise Unauthorized(INCORRECT_LOGIN)
        if self._hasher.needs_rehash(stored_hash):
            await self._store.update_user(user.username, password_hash=self._hasher.hash(password))
        now = self._now()
        await self._store.record_login(user.id, now)
        return await self._issue(user, "session", name=None, expires_at=now + self._session_ttl)

    async def logout(self, token: str) -> bool:
        """Forget a session token; False when it was unknown. An API key is left alone (revoke it by its id), so a
        client logging out with its key does not lose it."""
        found = await self._store.find_token(token_hash(token))
        if found is None or found[0].kind != "session":
            return False
        return await self._store.delete_token(token_hash(token))

    async def authenticate(self, token: str) -> Identity | None:
        """Who a token (session or API key) belongs to; None when unknown or expired (an expired one is deleted)."""
        found = await self._store.find_token(token_hash(token))
        if found is None:
            return None
        record, user = found
        now = self._now()
        if record.expires_at is not None and record.expires_at <= now:
            await self._store.delete_token(token_hash(token))
            return None
        # `last_used_at` is for people reading a key list, not an audit log: writing it on every request would
        # turn each authenticated read into a write (measured: 2.6x the latency of the route with auth off).
        if record.last_used_at is None or now - record.last_used_at >= TOUCH_INTERVAL:
            await self._store.touch_token(record.id, now)
        return Identity(username=user.username, admin=user.admin, user_id=user.id)

    # API keys

    async def create_api_key(self, username: str, name: str | None = None) -> IssuedToken:
        """A key that does not expire; its clear text is in the result only."""
        return await self._issue(await self.get_user(username), "api_key", name=name, expires_at=None)

    async def list_api_keys(self, username: str) -> list[TokenRecord]:
        return await self._store.list_tokens((await self.get_user(username)).id, "api_key")

    async def revoke_api_key(self, username: str, key_id: int) -> None:
        user = await self.get_user(username)
        if not await self._store.delete_token_by_id(user.id, key_id):
            raise NotFound(f"No API key {key_id}")
        await self._user_changed(user.username)

    async def _user_changed(self, username: str) -> None:
        if self._bus is not None:
            await self._bus.publish(BusMessage(event=USER_CHANGED_EVENT, room=None, data={"username": username}))

    async def _issue(
        self, user: User, kind: TokenKind, *, name: str | None, expires_at: datetime | None
    ) -> IssuedToken:
        token = secrets.token_urlsafe(32)
        record = await self._store.insert_token(
            user.id, token_hash(token), kind, name=name, created_at=self._now(), expires_at=expires_at
        )
        return IssuedToken(token=token, record=record, user=user)

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash
