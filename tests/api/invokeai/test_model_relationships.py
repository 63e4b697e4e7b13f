"""InvokeAI `/api/v1/model_relationships` over the Postgres registry."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from serve_app.domain.models import ModelChanges
from tests.api.invokeai.test_models import Models, imports, make_models  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(120)

URL = "/api/v1/model_relationships/"


@pytest_asyncio.fixture(loop_scope="session")
async def api(make_models: Any, tmp_path: Any) -> Models:  # noqa: F811
    folder = tmp_path / "models"
    folder.mkdir()
    models: Models = await make_models(folder)
    return models


@pytest_asyncio.fixture(loop_scope="session")
async def keys(api: Models, imports: Any) -> list[str]:  # noqa: F811
    """Keys of three registered models, sorted."""
    found = []
    for name in ("a", "b", "c"):
        record = await api.service.register_local(
            imports / "tiny-lora.safetensors", inplace=False, changes=ModelChanges(name=name), source=name
        )
        found.append(record.key)
    return sorted(found)


async def related(api: Models, key: str) -> list[str]:
    response = await api.http.get(f"{URL}i/{key}")
    assert response.status_code == 200, response.text
    result: list[str] = response.json()
    return result


async def test_relate_list_and_unrelate(api, keys):
    a, b, c = keys
    assert await related(api, a) == []

    for pair in ((a, b), (c, a)):
        response = await api.http.post(URL, json={"model_key_1": pair[0], "model_key_2": pair[1]})
        assert (response.status_code, response.content) == (204, b"")

    assert await related(api, a) == [b, c]
    assert await related(api, b) == [a]
    batch = await api.http.post(f"{URL}batch", json={"model_keys": [b, c]})
    assert (batch.status_code, batch.json()) == (200, [a])
    assert (await api.http.post(f"{URL}batch", json={"model_keys": []})).json() == []

    removed = await api.http.request("DELETE", URL, json={"model_key_1": b, "model_key_2": a})
    assert (removed.status_code, removed.content) == (204, b"")
    assert await related(api, a) == [c]

    # Deleting a model takes its relationships with it.
    assert (await api.http.delete(f"/api/v2/models/i/{c}")).status_code == 204
    assert await related(api, a) == []


async def test_errors(api, keys):
    a, b, _ = keys
    assert (await api.http.post(URL, json={"model_key_1": a, "model_key_2": b})).status_code == 204

    cases = [
        ("POST", {"model_key_1": b, "model_key_2": a}, 409),  # exists, in either order
        ("POST", {"model_key_1": a, "model_key_2": a}, 400),
        ("POST", {"model_key_1": a, "model_key_2": "missing"}, 404),
        ("DELETE", {"model_key_1": a, "model_key_2": a}, 400),
        ("DELETE", {"model_key_1": keys[2], "model_key_2": a}, 404),
        ("POST", {"model_key_1": a}, 422),
        ("DELETE", {}, 422),
    ]
    for method, body, status in cases:
        response = await api.http.request(method, URL, json=body)
        assert response.status_code == status, (method, body, response.text)
        assert "detail" in response.json()
    self_relation = await api.http.post(URL, json={"model_key_1": a, "model_key_2": a})
    assert self_relation.json() == {"detail": "Cannot relate a model to itself."}
    unknown = await api.http.get(f"{URL}i/missing")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "model not found"})
    assert await related(api, a) == [b]
