"""The models a claimed job needs, resolved from the registry before it leaves for a replica.

Replicas read no registry: a job carries the specs of every model its graph references (by key) plus the
embeddings its prompts name (`<name>`, InvokeAI's syntax). Keys the registry does not know are left out, so
the node that asks for one fails with "model not found" as it would in InvokeAI. The records stay here to
give the replica's model-load reports their full InvokeAI config on the way to Socket.IO.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from serve_app.domain.jobs import ClaimedJob
from serve_app.domain.models import ModelRecord, ModelType, model_keys_in
from serve_app.domain.ports import BusMessage, ModelLoadEvent, ModelRegistry
from serve_app.services.invokeai_events import now_timestamp

# `<name>` in a prompt; names are registry names, so no whitespace or angle brackets inside.
_EMBEDDING_REFERENCE = re.compile(r"<([^<>\s]+)>")

# A record as the InvokeAI `AnyModelConfig` it is shown as (services.model_configs.to_config, dumped).
RenderConfig = Callable[[ModelRecord], dict[str, Any]]


@dataclass
class Snapshot:
    """A job with its models, and the records behind them."""

    job: ClaimedJob
    records: dict[str, ModelRecord] = field(default_factory=dict)


class ModelSnapshots:
    def __init__(self, registry: ModelRegistry, render: RenderConfig) -> None:
        self._registry = registry
        self._render = render

    async def resolve(self, job: ClaimedJob) -> Snapshot:
        """`job` with `models` filled in from the registry (jobs of other kinds pass through unchanged)."""
        graph = job.request.get("graph")
        if graph is None:
            return Snapshot(job)
        records = await self._registry.get_many(sorted(model_keys_in(graph)))
        named = set(_EMBEDDING_REFERENCE.findall(" ".join(_strings(graph))))
        if named:
            for record in await self._registry.find(type=ModelType.EMBEDDING.value):
                if record.name in named:
                    records.setdefault(record.key, record)
        models = {key: record.spec() for key, record in records.items()}
        return Snapshot(job.model_copy(update={"models": models}), records)

    def load_message(self, snapshot: Snapshot, event: ModelLoadEvent) -> BusMessage | None:
        """InvokeAI's `model_load_started`/`_complete` (broadcast to every client), or None for a key the
        snapshot does not hold."""
        record = snapshot.records.get(event.key)
        if record is None:
            return None
        data = {"timestamp": now_timestamp(), "config": self._render(record), "submodel_type": event.submodel_type}
        return BusMessage(event=f"model_load_{event.kind}", room=None, data=data)


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
