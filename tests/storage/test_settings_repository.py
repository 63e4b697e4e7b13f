"""PgSettingsStore on a real Postgres: JSON values of any kind round-trip, an update overwrites, keys are shared."""

from __future__ import annotations

import pytest

from serve_app.storage.settings_repository import PgSettingsStore

pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="session")]


async def test_empty_then_values_of_every_json_kind_round_trip(pool) -> None:
    store = PgSettingsStore(pool)
    assert await store.get_all() == {}
    values = {"safe": False, "max_queued_invocations": 4, "precision": None, "canny": "me/canny", "x": {"a": [1]}}
    await store.set_many(values)
    assert await store.get_all() == values
    # JSON null is a stored value, not a missing row.
    assert await pool.fetchval("SELECT value IS NOT NULL FROM app_settings WHERE key = 'precision'") is True


async def test_set_many_overwrites_only_the_given_keys_and_is_visible_to_another_store(pool) -> None:
    await PgSettingsStore(pool).set_many({"safe": True, "intermediate_steps": 10})
    before = await pool.fetchval("SELECT updated_at FROM app_settings WHERE key = 'safe'")
    await PgSettingsStore(pool).set_many({"safe": False})
    await PgSettingsStore(pool).set_many({})  # nothing to store: no statement, no change
    assert await PgSettingsStore(pool).get_all() == {"safe": False, "intermediate_steps": 10}
    assert await pool.fetchval("SELECT updated_at FROM app_settings WHERE key = 'safe'") >= before


async def test_keys_are_data_not_sql(pool) -> None:
    hostile = "x'); DROP TABLE app_settings; --"
    await PgSettingsStore(pool).set_many({hostile: "v"})
    assert await PgSettingsStore(pool).get_all() == {hostile: "v"}
