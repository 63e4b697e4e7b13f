"""The model-free node implementations."""

from __future__ import annotations

from serve_app.domain.graph.primitive_nodes import (
    CollectInvocation,
    CoreMetadataInvocation,
    IterateInvocation,
    RandomIntInvocation,
)
from serve_app.domain.graph.primitives import PRIMITIVES, core_metadata, iterate, rand_int


def test_registry_covers_the_model_free_nodes() -> None:
    assert set(PRIMITIVES) == {
        "integer",
        "float",
        "string",
        "boolean",
        "rand_int",
        "collect",
        "iterate",
        "core_metadata",
    }


def test_rand_int_stays_in_range() -> None:
    draws = {rand_int(RandomIntInvocation(low=3, high=6)).value for _ in range(200)}
    assert draws == {3, 4, 5}


def test_iterate_and_collect() -> None:
    output = iterate(IterateInvocation(collection=["a", "b", "c"], index=1))
    assert (output.item, output.index, output.total) == ("b", 1, 3)
    assert PRIMITIVES["collect"](CollectInvocation(collection=[1, 2])).collection == [1, 2]  # type: ignore[attr-defined]


def test_core_metadata_keeps_set_fields_and_extra_keys() -> None:
    node = CoreMetadataInvocation.model_validate(
        {
            "id": "m",
            "type": "core_metadata",
            "seed": 5,
            "cfg_rescale_multiplier": 0,
            "model": {"key": "k", "hash": "h", "name": "n", "base": "sd-1", "type": "main"},
            "my_extra": {"nested": True},
        }
    )
    assert core_metadata(node).metadata == {
        "seed": 5,
        "cfg_rescale_multiplier": 0.0,
        "model": {"key": "k", "hash": "h", "name": "n", "base": "sd-1", "type": "main"},
        "my_extra": {"nested": True},
        "app_version": "6.8.1",
    }
