"""PgAccountStore on a real Postgres: usernames ignore case, the last admin stays, tokens are found by hash."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from serve_app.storage.account_repository import PgAccountStore

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


@pytest.fixture
def store(pool) -> PgAccountStore:
    return PgAccountStore(pool)


async def test_users_round_trip_and_names_ignore_case(store):
    alice = await store.create_user("Alice", "hash-a", admin=True, first_name="Alice", last_name="Liddell")
    assert alice is not None
    assert (alice.username, alice.admin, alice.first_name, alice.last_name) == ("Alice", True, "Alice", "Liddell")
    assert await store.create_user("ALICE", "hash-b", admin=False) is None
    bob = await store.create_user("bob", "hash-b", admin=False)
    assert bob is not None and bob.admin is False

    assert await store.get_user("alice") == alice
    found = await store.credentials("aLiCe")
    assert found == (alice, "hash-a")
    assert await store.get_user("carol") is None
    assert [user.username for user in await store.list_users()] == ["Alice", "bob"]
    assert await store.count_users() == 2

    changed = await store.update_user("BOB", password_hash="hash-c", first_name="Bob")
    assert not isinstance(changed, str)
    assert (changed.first_name, changed.last_name, changed.admin) == ("Bob", None, False)
    assert (await store.credentials("bob")) == (changed, "hash-c")
    assert await store.update_user("carol", admin=True) == "missing"

    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await store.record_login(alice.id, at)
    logged_in = await store.get_user("alice")
    assert logged_in is not None and logged_in.last_login == at


async def test_the_last_admin_can_be_neither_demoted_nor_deleted(store):
    await store.create_user("root", "h", admin=True)
    await store.create_user("user", "h", admin=False)
    assert await store.update_user("root", admin=False) == "last_admin"
    assert await store.delete_user("ROOT") == "last_admin"
    root = await store.get_user("root")
    assert root is not None and root.admin

    assert await store.delete_user("user") == "deleted"
    assert await store.delete_user("user") == "missing"
    await store.create_user("second", "h", admin=True)
    demoted = await store.update_user("root", admin=False)
    assert not isinstance(demoted, str) and demoted.admin is False
    assert await store.delete_user("second") == "last_admin"


async def test_concurrent_demotions_leave_one_admin(store):
    await store.create_user("a", "h", admin=True)
    await store.create_user("b", "h", admin=True)
    results = await asyncio.gather(store.update_user("a", admin=False), store.update_user("b", admin=False))
    assert sorted(isinstance(result, str) for result in results) == [False, True]
    assert len([user for user in await store.list_users() if user.admin]) == 1


async def test_tokens_by_hash_kind_and_owner(store, pool):
    alice = await store.create_user("alice", "h", admin=False)
    bob = await store.create_user("bob", "h", admin=False)
    assert alice is not None and bob is not None
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    now = datetime(2029, 1, 1, tzinfo=UTC)
    session = await store.insert_token(
        alice.id, "sha-session", "session", name=None, created_at=now, expires_at=expires
    )
    key = await store.insert_token(alice.id, "sha-key", "api_key", name="ci", created_at=now, expires_at=None)
    await store.insert_token(bob.id, "sha-bob", "api_key", name="bob's", created_at=now, expires_at=None)
    assert (session.kind, session.created_at, session.expires_at, session.last_used_at) == (
        "session",
        now,
        expires,
        None,
    )
    assert (key.kind, key.name, key.expires_at) == ("api_key", "ci", None)

    found = await store.find_token("sha-key")
    assert found is not None and found == (key, alice)
    assert await store.find_token("sha-unknown") is None

    used = datetime.now(UTC) + timedelta(seconds=1)
    await store.touch_token(key.id, used)
    found = await store.find_token("sha-key")
    assert found is not None and found[0].last_used_at == used

    assert [token.name for token in await store.list_tokens(alice.id, "api_key")] == ["ci"]
    assert [token.id for token in await store.list_tokens(alice.id, "session")] == [session.id]
    # Bob cannot revoke Alice's key by its id.
    assert not await store.delete_token_by_id(bob.id, key.id)
    assert await store.delete_token_by_id(alice.id, key.id)
    assert await store.find_token("sha-key") is None

    assert await store.delete_token("sha-session")
    assert not await store.delete_token("sha-session")
    # Deleting a user deletes their tokens.
    assert await store.delete_user("bob") == "deleted"
    assert await store.find_token("sha-bob") is None
    assert await pool.fetchval("SELECT count(*) FROM auth_tokens") == 0
