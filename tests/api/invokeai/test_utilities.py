"""POST /api/v1/utilities/dynamicprompts: InvokeAI's prompt expansion, through the ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest_asyncio

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext

URL = "/api/v1/utilities/dynamicprompts"


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # The route needs no collaborators.
    app = create_app(ApiContext(jobs=cast(Any, None), store=cast(Any, None), version="test"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve-app.test") as client:
        yield client


async def expand(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await http.post(URL, json=body)
    assert response.status_code == 200, response.text
    return cast(dict[str, Any], response.json())


async def test_golden_example(http):
    # 80-utilities-dynamicprompts.json, recorded from InvokeAI 6.8.1.
    body = await expand(http, prompt="a {red|blue} cat on a {mat|sofa}", max_prompts=10, combinatorial=True)
    assert body == {
        "prompts": ["a red cat on a mat", "a red cat on a sofa", "a blue cat on a mat", "a blue cat on a sofa"],
        "error": None,
    }


async def test_combinatorial_is_the_default_and_max_prompts_truncates(http):
    assert (await expand(http, prompt="{a|b} {c|d}"))["prompts"] == ["a c", "a d", "b c", "b d"]
    assert (await expand(http, prompt="{a|b} {c|d}", max_prompts=3))["prompts"] == ["a c", "a d", "b c"]
    assert await expand(http, prompt="plain") == {"prompts": ["plain"], "error": None}


async def test_random_generation_is_deterministic_with_a_seed(http):
    prompt = "{a|b|c|d} {e|f|g|h} {i|j|k|l}"
    first = await expand(http, prompt=prompt, combinatorial=False, seed=42, max_prompts=6)
    again = await expand(http, prompt=prompt, combinatorial=False, seed=42, max_prompts=6)
    other = await expand(http, prompt=prompt, combinatorial=False, seed=43, max_prompts=6)
    assert first == again
    assert len(first["prompts"]) == 6 and first["error"] is None
    assert other["prompts"] != first["prompts"]
    assert all(len(p.split()) == 3 for p in first["prompts"])


async def test_empty_prompt_gives_one_empty_prompt(http):
    assert await expand(http, prompt="") == {"prompts": [""], "error": None}


async def test_broken_syntax_returns_the_prompt_and_the_error(http):
    body = await expand(http, prompt="a {b|c")
    assert body["prompts"] == ["a {b|c"]
    assert isinstance(body["error"], str) and body["error"]


async def test_validation_errors_are_422_in_fastapi_shape(http):
    for body, loc in [
        ({}, ["body", "prompt"]),
        ({"prompt": "x", "max_prompts": 0}, ["body", "max_prompts"]),
        ({"prompt": "x", "max_prompts": 10001}, ["body", "max_prompts"]),
        ({"prompt": "x", "seed": "nope"}, ["body", "seed"]),
    ]:
        response = await http.post(URL, json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"] == loc
