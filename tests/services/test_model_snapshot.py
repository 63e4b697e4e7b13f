"""ModelSnapshots: a claimed job leaves with the registry's specs of the models it names, and model-load reports
become InvokeAI's broadcast events with the full config."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from serve_app.domain.jobs import ClaimedJob
from serve_app.domain.models import ModelFamily, ModelFormat, ModelRecord, ModelType
from serve_app.domain.ports import ModelLoadEvent
from serve_app.services.model_configs import to_config
from serve_app.services.model_snapshot import ModelSnapshots
from serve_app.storage.model_registry import PgModelRegistry

pytestmark = pytest.mark.timeout(60)


def _record(name: str, type_: ModelType, base: ModelFamily = ModelFamily.SD1) -> ModelRecord:
    fmt = {ModelType.MAIN: ModelFormat.DIFFUSERS, ModelType.LORA: ModelFormat.LYCORIS}.get(
        type_, ModelFormat.EMBEDDING_FILE
    )
    return ModelRecord(
        key=str(uuid.uuid4()),
        hash=f"blake3:{name}",
        path=f"/models/{name}",
        file_size=10,
        name=name,
        base=base,
        type=type_,
        format=fmt,
        source=f"/models/{name}",
    )


def _identifier(record: ModelRecord) -> dict[str, Any]:
    return {"key": record.key, "hash": record.hash, "name": record.name, "base": record.base, "type": record.type}


def _job(graph: dict[str, Any]) -> ClaimedJob:
    return ClaimedJob(id=uuid.uuid4(), attempt=1, request={"kind": "graph", "graph": graph})


@pytest.fixture
async def snapshots(pool: Any) -> tuple[ModelSnapshots, dict[str, ModelRecord]]:
    registry = PgModelRegistry(pool)
    records = {
        "main": _record("snap-main", ModelType.MAIN),
        "lora": _record("snap-lora", ModelType.LORA),
        "named": _record("snap-emb", ModelType.EMBEDDING),
        "unnamed": _record("snap-other-emb", ModelType.EMBEDDING),
    }
    for record in records.values():
        await registry.add(record)
    return ModelSnapshots(registry, render=lambda r: to_config(r).model_dump(mode="json")), records


async def test_a_job_carries_the_models_its_graph_references_and_the_embeddings_its_prompts_name(snapshots):
    service, records = snapshots
    graph = {
        "nodes": {
            "loader": {"id": "loader", "type": "main_model_loader", "model": _identifier(records["main"])},
            "lora": {"id": "lora", "type": "lora_selector", "lora": _identifier(records["lora"]), "weight": 0.5},
            "missing": {
                "id": "missing",
                "type": "vae_loader",
                "vae_model": {**_identifier(records["main"]), "key": "nope"},
            },
            "prompt": {"id": "prompt", "type": "compel", "prompt": "a cat in the style of <snap-emb>"},
        },
        "edges": [],
    }
    snapshot = await service.resolve(_job(graph))

    expected = {records[name].key for name in ("main", "lora", "named")}
    assert set(snapshot.job.models) == expected  # the unknown key is left out, the unnamed embedding too
    assert snapshot.job.models[records["lora"].key] == records["lora"].spec()
    assert snapshot.job.models[records["named"].key].type is ModelType.EMBEDDING


async def test_jobs_without_a_graph_go_out_as_they_came(snapshots):
    service, _ = snapshots
    job = ClaimedJob(id=uuid.uuid4(), attempt=1, request={"kind": "txt2img", "prompt": "<snap-emb>"})
    snapshot = await service.resolve(job)
    assert snapshot.job is job and snapshot.records == {}


async def test_a_load_report_becomes_a_broadcast_event_with_the_full_config(snapshots):
    service, records = snapshots
    graph = {"nodes": {"loader": {"id": "loader", "model": _identifier(records["main"])}}, "edges": []}
    snapshot = await service.resolve(_job(graph))

    message = service.load_message(
        snapshot, ModelLoadEvent(kind="started", key=records["main"].key, submodel_type="unet")
    )
    assert message is not None
    assert message.event == "model_load_started" and message.room is None
    assert message.data["submodel_type"] == "unet"
    assert message.data["config"]["key"] == records["main"].key
    assert message.data["config"]["name"] == "snap-main" and message.data["config"]["type"] == "main"
    assert isinstance(message.data["timestamp"], int)
    assert service.load_message(snapshot, ModelLoadEvent(kind="complete", key="unknown")) is None
