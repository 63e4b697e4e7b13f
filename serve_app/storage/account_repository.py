"""PgAccountStore: the AccountStore port in Postgres (SQL in sql/accounts.sql)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, LiteralString, cast

import asyncpg

from serve_app.domain.accounts import TokenKind, TokenRecord, User
from serve_app.domain.rest_query import RestQuery
from serve_app.storage.queries import load
from serve_app.storage.rest_query_sql import Column, ColumnKind, fetch_page


@dataclasses.dataclass(frozen=True, slots=True)
class AccountQueries:
    """One attribute per `-- name:` block of sql/accounts.sql."""

    admin_lock: LiteralString
    insert_user: LiteralString
    get_user: LiteralString
    list_users: LiteralString
    user_source: LiteralString
    count_users: LiteralString
    count_admins: LiteralString
    other_admins: LiteralString
    update_user: LiteralString
    delete_user: LiteralString
    record_login: LiteralString
    insert_token: LiteralString
    find_token: LiteralString
    touch_token: LiteralString
    delete_token: LiteralString
    list_tokens: LiteralString
    delete_token_by_id: LiteralString
    delete_tokens: LiteralString


Q = load(AccountQueries, "sql/accounts.sql")


# Enfugue's User columns a query may filter, search or sort on (hidden ones, such as the password, are absent).
USER_COLUMNS = {
    "id": Column("q.id", ColumnKind.INTEGER),
    "username": Column("q.username"),
    "first_name": Column("q.first_name"),
    "last_name": Column("q.last_name"),
    "admin": Column("q.admin", ColumnKind.BOOLEAN),
    "created": Column("q.created_at", ColumnKind.TIMESTAMP),
    "last_login": Column("q.last_login", ColumnKind.TIMESTAMP),
}


def _user(row: Mapping[str, Any], prefix: str = "") -> User:
    return User(
        id=row[f"{prefix}id"],
        username=row[f"{prefix}username"],
        admin=row[f"{prefix}admin"],
        created_at=row[f"{prefix}created_at"],
        first_name=row[f"{prefix}first_name"],
        last_name=row[f"{prefix}last_name"],
        last_login=row[f"{prefix}last_login"],
    )


def _token(row: Mapping[str, Any]) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        user_id=row["user_id"],
        kind=cast(TokenKind, row["kind"]),
        name=row["name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
    )


class PgAccountStore:
    """Users and their tokens over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_user(
        self,
        username: str,
        password_hash: str,
        *,
        admin: bool,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> User | None:
        row = await self._pool.fetchrow(Q.insert_user, username, password_hash, admin, first_name, last_name)
        return _user(row) if row is not None else None

    async def get_user(self, username: str) -> User | None:
        row = await self._pool.fetchrow(Q.get_user, username)
        return _user(row) if row is not None else None

    async def credentials(self, username: str) -> tuple[User, str] | None:
        row = await self._pool.fetchrow(Q.get_user, username)
        return (_user(row), row["password_hash"]) if row is not None else None

    async def list_users(self) -> list[User]:
        return [_user(row) for row in await self._pool.fetch(Q.list_users)]

    async def query_users(self, query: RestQuery) -> tuple[list[User], int]:
        """Enfugue's generic REST GET over users; the password hash is not a column anyone can name."""
        rows, count = await fetch_page(self._pool, Q.user_source, (), query, USER_COLUMNS, tiebreak="lower(q.username)")
        return [_user(row) for row in rows], count

    async def update_user(
        self,
        username: str,
        *,
        password_hash: str | None = None,
        admin: bool | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> User | Literal["missing", "last_admin"]:
        async with self._pool.acquire() as conn, conn.transaction():
            if admin is False:
                await conn.execute(Q.admin_lock)
                current = await conn.fetchrow(Q.get_user, username)
                if current is None:
                    return "missing"
                if current["admin"] and await conn.fetchval(Q.other_admins, username) == 0:
                    return "last_admin"
            row = await conn.fetchrow(Q.update_user, username, password_hash, admin, first_name, last_name)
        return _user(row) if row is not None else "missing"

    async def delete_user(self, username: str) -> Literal["deleted", "missing", "last_admin"]:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(Q.admin_lock)
            current = await conn.fetchrow(Q.get_user, username)
            if current is None:
                return "missing"
            if current["admin"] and await conn.fetchval(Q.other_admins, username) == 0:
                return "last_admin"
            await conn.execute(Q.delete_user, username)
        return "deleted"

    async def count_users(self) -> int:
        return int(await self._pool.fetchval(Q.count_users))

    async def count_admins(self) -> int:
        return int(await self._pool.fetchval(Q.count_admins))

    async def record_login(self, user_id: int, at: datetime) -> None:
        await self._pool.execute(Q.record_login, user_id, at)

    async def insert_token(
        self,
        user_id: int,
        token_hash: str,
        kind: TokenKind,
        *,
        name: str | None,
        created_at: datetime,
        expires_at: datetime | None,
    ) -> TokenRecord:
        row = await self._pool.fetchrow(Q.insert_token, user_id, token_hash, kind, name, created_at, expires_at)
        assert row is not None
        return _token(row)

    async def find_token(self, token_hash: str) -> tuple[TokenRecord, User] | None:
        row = await self._pool.fetchrow(Q.find_token, token_hash)
        return (_token(row), _user(row, "u_")) if row is not None else None

    async def touch_token(self, token_id: int, at: datetime) -> None:
        await self._pool.execute(Q.touch_token, token_id, at)

    async def delete_token(self, token_hash: str) -> bool:
        return await self._pool.fetchval(Q.delete_token, token_hash) is not None

    async def list_tokens(self, user_id: int, kind: TokenKind) -> list[TokenRecord]:
        return [_token(row) for row in await self._pool.fetch(Q.list_tokens, user_id, kind)]

    async def delete_token_by_id(self, user_id: int, token_id: int) -> bool:
        return await self._pool.fetchval(Q.delete_token_by_id, user_id, token_id) is not None

    async def delete_tokens(self, kind: TokenKind) -> int:
        return int(await self._pool.fetchval(Q.delete_tokens, kind))
