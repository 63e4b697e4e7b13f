"""AccountService over the real Postgres store and argon2: Enfugue's user rules, logins, tokens and API keys."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher

from serve_app.domain.accounts import Identity
from serve_app.domain.errors import InvalidRequest, NotFound, Unauthorized
from serve_app.services.accounts import TOUCH_INTERVAL, AccountService
from serve_app.storage.account_repository import PgAccountStore
from serve_app.storage.passwords import Argon2Hasher

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

# Cheap argon2 parameters: the scheme and the stored format are the production ones, the cost is not.
FAST = Argon2Hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(pool, clock) -> AccountService:
    return AccountService(PgAccountStore(pool), FAST, now=clock)


@pytest.mark.parametrize(
    ("username", "password", "repeat", "message"),
    [
        ("", "pw", "pw", "Username is required."),
        (None, "pw", "pw", "Username is required."),
        ("bad name", "pw", "pw", "Usernames may contain only letters, digits and underscores."),
        ("alice", "", "", "Password is required."),
        ("alice", None, None, "Password is required."),
        ("alice", "pw", "other", "Passwords do not match."),
        ("ALICE_", "pw", "pw", "User ALICE_ already exists."),
    ],
)
async def test_create_user_checks_with_enfugues_messages(accounts, username, password, repeat, message):
    await accounts.create_user("alice_", "pw", "pw")
    with pytest.raises(InvalidRequest) as raised:
        await accounts.create_user(username, password, repeat)
    assert raised.value.message == message


async def test_passwords_are_stored_as_argon2_hashes(accounts, pool):
    await accounts.create_user("alice", "correct horse", "correct horse")
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE username = 'alice'")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert FAST.verify(stored, "correct horse") and not FAST.verify(stored, "wrong")


async def test_login_ignores_username_case_and_stores_only_the_token_hash(accounts, pool, clock):
    alice = await accounts.create_user("Alice", "pw", "pw", first_name="Alice")
    issued = await accounts.login("aLICE", "pw")
    assert issued.user.id == alice.id
    assert len(issued.token) >= 43  # 32 random bytes, base64url
    assert issued.record.kind == "session"
    assert issued.record.expires_at == clock.now + timedelta(hours=730)
    row = await pool.fetchrow("SELECT * FROM auth_tokens")
    assert row["token_hash"] == hashlib.sha256(issued.token.encode()).hexdigest()
    assert issued.token not in [str(value) for value in row.values()]
    assert (await accounts.get_user("alice")).last_login == clock.now


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        (None, "pw", "Missing username or password."),
        ("alice", "", "Missing username or password."),
        ("alice", "nope", "Incorrect username or password."),
        ("nobody", "pw", "Incorrect username or password."),
    ],
)
async def test_failed_logins_are_unauthorized(accounts, pool, username, password, message):
    await accounts.create_user("alice", "pw", "pw")
    with pytest.raises(Unauthorized) as raised:
        await accounts.login(username, password)
    assert raised.value.message == message
    assert await pool.fetchval("SELECT count(*) FROM auth_tokens") == 0


async def test_last_used_is_refreshed_at_most_once_a_minute(accounts, pool, clock):
    await accounts.create_user("alice", "pw", "pw")
    issued = await accounts.login("alice", "pw")
    await accounts.authenticate(issued.token)
    first = clock.now
    clock.now += TOUCH_INTERVAL - timedelta(seconds=1)
    await accounts.authenticate(issued.token)
    assert await pool.fetchval("SELECT last_used_at FROM auth_tokens") == first
    clock.now += timedelta(seconds=1)
    await accounts.authenticate(issued.token)
    assert await pool.fetchval("SELECT last_used_at FROM auth_tokens") == clock.now


async def test_authenticate_until_expiry_then_forget_the_token(accounts, pool, clock):
    await accounts.create_user("alice", "pw", "pw", admin=True)
    issued = await accounts.login("alice", "pw")
    clock.now += timedelta(hours=1)
    identity = await accounts.authenticate(issued.token)
    assert identity == Identity(username="alice", admin=True, user_id=issued.user.id)
    assert await pool.fetchval("SELECT last_used_at FROM auth_tokens") == clock.now
    assert await accounts.authenticate(issued.token + "x") is None

    clock.now = issued.record.expires_at
    assert await accounts.authenticate(issued.token) is None
    assert await pool.fetchval("SELECT count(*) FROM auth_tokens") == 0


async def test_logout_forgets_the_session(accounts):
    await accounts.create_user("alice", "pw", "pw")
    issued = await accounts.login("alice", "pw")
    key = await accounts.create_api_key("alice")
    assert await accounts.logout(issued.token)
    assert await accounts.authenticate(issued.token) is None
    assert not await accounts.logout(issued.token)
    # Logging out with an API key does not revoke it.
    assert not await accounts.logout(key.token)
    assert await accounts.authenticate(key.token) is not None


async def test_api_keys_never_expire_and_can_be_revoked(accounts, clock):
    await accounts.create_user("alice", "pw", "pw")
    await accounts.create_user("bob", "pw", "pw")
    key = await accounts.create_api_key("alice", "ci")
    assert key.record.expires_at is None
    clock.now += timedelta(days=3650)
    identity = await accounts.authenticate(key.token)
    assert identity is not None and (identity.username, identity.admin) == ("alice", False)
    assert [(item.id, item.name) for item in await accounts.list_api_keys("alice")] == [(key.record.id, "ci")]
    assert await accounts.list_api_keys("bob") == []

    with pytest.raises(NotFound):
        await accounts.revoke_api_key("bob", key.record.id)
    await accounts.revoke_api_key("alice", key.record.id)
    assert await accounts.authenticate(key.token) is None
    assert await accounts.list_api_keys("alice") == []


async def test_update_changes_the_password_only_when_both_fields_are_given(accounts):
    await accounts.create_user("alice", "old", "old")
    await accounts.create_user("root", "pw", "pw", admin=True)
    await accounts.update_user("alice", new_password="new", last_name="Liddell")
    await accounts.login("alice", "old")  # One field alone changes nothing.
    with pytest.raises(InvalidRequest, match="Passwords do not match."):
        await accounts.update_user("alice", new_password="new", repeat_password="other")
    user = await accounts.update_user("alice", new_password="new", repeat_password="new", admin=True)
    assert (user.admin, user.last_name) == (True, "Liddell")
    await accounts.login("alice", "new")
    with pytest.raises(Unauthorized):
        await accounts.login("alice", "old")
    with pytest.raises(NotFound, match="No User found with username=carol"):
        await accounts.update_user("carol", admin=True)


async def test_the_last_admin_stays(accounts):
    await accounts.create_user("root", "pw", "pw", admin=True)
    with pytest.raises(InvalidRequest, match="last administrator"):
        await accounts.delete_user("root")
    with pytest.raises(InvalidRequest, match="last administrator"):
        await accounts.update_user("root", admin=False)
    with pytest.raises(NotFound):
        await accounts.delete_user("nobody")


async def test_a_weaker_hash_is_upgraded_at_login(pool, clock):
    weak = Argon2Hasher(PasswordHasher(time_cost=1, memory_cost=512, parallelism=1))
    await AccountService(PgAccountStore(pool), weak, now=clock).create_user("alice", "pw", "pw")
    before = await pool.fetchval("SELECT password_hash FROM users")
    await AccountService(PgAccountStore(pool), FAST, now=clock).login("alice", "pw")
    after = await pool.fetchval("SELECT password_hash FROM users")
    assert "m=512," in before and "m=1024," in after
    assert FAST.verify(after, "pw")


async def test_bootstrap_creates_the_first_admin_only(accounts):
    with pytest.raises(InvalidRequest, match="SERVE_APP_ADMIN_PASSWORD"):
        await accounts.bootstrap_admin("admin", "")
    admin = await accounts.bootstrap_admin("admin", "secret")
    assert admin is not None and admin.admin
    assert await accounts.bootstrap_admin("admin", "changed") is None
    await accounts.login("admin", "secret")
