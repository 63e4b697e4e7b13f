"""ModelService on a real Postgres registry, real files, the real probe and hash, and tiny models built here."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from diffusers import StableDiffusionPipeline
from PIL import Image

from serve_app.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from serve_app.domain.models import (
    ModelChanges,
    ModelFamily,
    ModelFormat,
    ModelSpec,
    ModelType,
    ProbedModel,
    SourceType,
    derived_key,
)
from serve_app.services.models import (
    CACHE_CLEAR_EVENT,
    FINGERPRINT_PREFIX,
    ModelService,
    cover_image_key,
)
from serve_app.serving.wiring import scan_models_folder
from serve_app.storage.model_hash import hash_model, model_size
from serve_app.storage.model_probe import probe
from serve_app.storage.model_registry import PgCacheStats, PgModelRegistry, PgModelSettings
from serve_app.storage.objects import FileObjectStore
from tests.support import tiny_models
from tests.support.recording_bus import RecordingBus

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def imports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models outside the models folder, in a folder installs may read; never modified by the tests."""
    root = tmp_path_factory.mktemp("imports")
    tiny_models.sd1_folder(root, name="tiny-sd1")
    tiny_models.sd1_single_file(root, name="tiny-sd1-file")
    tiny_models.peft_lora(root, name="tiny-lora")
    tiny_models.textual_inversion(root, name="tiny-embedding", fmt="diffusers")
    (root / "notes.txt").write_text("not a model")
    return root


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder no install may read."""
    root = tmp_path_factory.mktemp("outside")
    tiny_models.peft_lora(root, name="secret-lora")
    return root


def convert_checkpoint(spec: ModelSpec, dest: Path) -> None:
    """A real single-file → diffusers conversion with diffusers itself (offline, from the `.config` folder)."""
    pipe = StableDiffusionPipeline.from_single_file(spec.path, config=spec.config_path, local_files_only=True)
    pipe.save_pretrained(dest, safe_serialization=True)


@dataclass
class Setup:
    service: ModelService
    registry: PgModelRegistry
    models_dir: Path
    store: FileObjectStore
    bus: RecordingBus
    cache_stats: PgCacheStats
    probed: list[Path]


@pytest_asyncio.fixture(loop_scope="session")
async def setup(pool: Any, tmp_path: Path, imports: Path) -> AsyncIterator[Setup]:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    probed: list[Path] = []

    def recording_probe(path: Path, base: ModelFamily | None) -> ProbedModel:
        probed.append(path)
        return probe(path, base)

    registry = PgModelRegistry(pool)
    store = FileObjectStore(tmp_path / "objects")
    bus = RecordingBus()
    cache_stats = PgCacheStats(pool)
    service = ModelService(
        registry,
        models_dir=models_dir,
        store=store,
        bus=bus,
        cache_stats=cache_stats,
        settings=PgModelSettings(pool),
        probe=recording_probe,
        hasher=hash_model,
        sizer=model_size,
        scan=scan_models_folder,
        converter=convert_checkpoint,
        allowed_roots=[imports],
    )
    yield Setup(service, registry, models_dir, store, bus, cache_stats, probed)


def tree(folder: Path) -> list[str]:
    """Every path under `folder`, hidden ones included (a leftover temporary copy would show)."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


def png(width: int = 600, height: int = 300) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


# -- register_local ------------------------------------------------------------------------------------------


async def test_register_copies_a_folder_into_the_models_folder(setup, imports):
    source = imports / "tiny-sd1"
    record = await setup.service.register_local(
        source, inplace=False, changes=ModelChanges(), source=str(source), source_api_response='{"x": 1}'
    )

    target = setup.models_dir / "sd-1" / "main" / "tiny-sd1"
    assert record.path == str(target)
    assert tree(target) == tree(source)
    assert (record.name, record.base, record.type, record.format) == ("tiny-sd1", "sd-1", "main", "diffusers")
    assert record.hash == hash_model(source) and record.hash.startswith("blake3:")
    assert record.file_size == model_size(source)
    assert (record.source, record.source_type, record.source_api_response) == (str(source), "path", '{"x": 1}')
    assert record.description == "sd-1 main model tiny-sd1"
    assert record.default_settings == {"width": 512, "height": 512}
    assert record.variant == "normal"
    assert await setup.registry.get(record.key) == record
    # Nothing else was left in the models folder (no temporary copy).
    assert tree(setup.models_dir / "sd-1" / "main") == ["tiny-sd1", *(f"tiny-sd1/{p}" for p in tree(target))]


async def test_register_in_place_copies_nothing(setup, imports):
    source = imports / "tiny-lora.safetensors"
    record = await setup.service.register_local(
        source, inplace=True, changes=ModelChanges(), source=str(source), source_type=SourceType.URL
    )

    assert record.path == str(source.resolve())
    assert (record.type, record.format, record.base, record.source_type) == ("lora", "lycoris", "sd-1", "url")
    assert record.default_settings is None
    assert tree(setup.models_dir) == []


async def test_changes_override_what_probing_found(setup, imports):
    source = imports / "tiny-lora.safetensors"
    changes = ModelChanges(
        name="ink/style", description="my lora", base=ModelFamily.SDXL, key="my-key", trigger_phrases=["ink"]
    )
    record = await setup.service.register_local(source, inplace=False, changes=changes, source="somewhere")

    assert (record.key, record.name, record.base, record.description) == ("my-key", "ink/style", "sdxl", "my lora")
    assert record.trigger_phrases == ["ink"]
    # A name is one path component on disk, with the file's suffix kept.
    assert record.path == str(setup.models_dir / "sdxl" / "lora" / "ink_style.safetensors")
    assert Path(record.path).read_bytes() == source.read_bytes()


async def test_a_checkpoint_is_copied_with_its_config_folder(setup, imports):
    source = imports / "tiny-sd1-file.safetensors"
    record = await setup.service.register_local(source, inplace=False, changes=ModelChanges(), source=str(source))

    target = setup.models_dir / "sd-1" / "main" / "tiny-sd1-file.safetensors"
    assert (record.path, record.format, record.config_path) == (
        str(target), "checkpoint", str(setup.models_dir / "sd-1" / "main" / "tiny-sd1-file.config"),
    )  # fmt: skip
    assert tree(Path(record.config_path)) == tree(imports / "tiny-sd1-file.config")


async def test_paths_outside_the_allowed_folders_are_refused_unread(setup, imports, outside):
    secret = outside / "secret-lora.safetensors"
    link = setup.models_dir / "link-to-secret.safetensors"
    link.symlink_to(secret)
    for path in (
        secret,
        imports / ".." / outside.name / "secret-lora.safetensors",  # `..` out of an allowed root
        Path("..") / ".." / outside.name / "secret-lora.safetensors",  # relative to the models folder
        link,  # a link inside the models folder to a file outside
    ):
        with pytest.raises(Forbidden):
            await setup.service.register_local(path, inplace=True, changes=ModelChanges(), source=str(path))
    assert setup.probed == []
    assert await setup.registry.find() == []


async def test_missing_and_unrecognised_paths(setup, imports):
    with pytest.raises(InvalidRequest, match="does not exist"):
        await setup.service.register_local(imports / "nope", inplace=False, changes=ModelChanges(), source="x")
    with pytest.raises(UnsupportedMediaType):
        await setup.service.register_local(imports / "notes.txt", inplace=False, changes=ModelChanges(), source="x")
    assert tree(setup.models_dir) == []
    assert await setup.registry.find() == []


async def test_a_conflict_leaves_no_copied_files(setup, imports):
    lora = imports / "tiny-lora.safetensors"
    first = await setup.service.register_local(lora, inplace=False, changes=ModelChanges(), source="a")
    before = tree(setup.models_dir)

    # The same name, base and type: refused before anything is copied.
    with pytest.raises(Conflict):
        await setup.service.register_local(lora, inplace=False, changes=ModelChanges(), source="b")
    # A taken key: refused by the registry after the copy, which is then removed.
    with pytest.raises(Conflict):
        await setup.service.register_local(
            imports / "tiny-sd1", inplace=False, changes=ModelChanges(key=first.key), source="c"
        )
    # The same path in place twice.
    await setup.service.register_local(lora, inplace=True, changes=ModelChanges(name="in-place"), source="d")
    with pytest.raises(Conflict):
        await setup.service.register_local(lora, inplace=True, changes=ModelChanges(name="again"), source="e")

    assert tree(setup.models_dir) == before
    assert [r.source for r in await setup.registry.find()] == ["d", "a"]


async def test_downloads_in_a_hidden_folder_of_the_models_folder_are_moved_in(setup, imports):
    staging = setup.models_dir / ".install-7"
    staging.mkdir()
    shutil.copy(imports / "tiny-lora.safetensors", staging / "fetched.safetensors")
    shutil.copytree(imports / "tiny-sd1", staging / "tiny-sd1")
    taken = await setup.service.register_local(
        imports / "tiny-sd1", inplace=True, changes=ModelChanges(), source="elsewhere"
    )

    record = await setup.service.register_local(
        staging / "fetched.safetensors", inplace=False, changes=ModelChanges(), source="https://example.test/f"
    )
    assert record.path == str(setup.models_dir / "sd-1" / "lora" / "fetched.safetensors")
    assert not (staging / "fetched.safetensors").exists()
    # A clash after the move puts the download back where it was.
    with pytest.raises(Conflict):
        await setup.service.register_local(
            staging / "tiny-sd1", inplace=False, changes=ModelChanges(key=taken.key, name="other"), source="x"
        )
    assert tree(staging / "tiny-sd1") == tree(imports / "tiny-sd1")
    assert tree(setup.models_dir) == [".install-7", *(f".install-7/{p}" for p in tree(staging)), "sd-1", "sd-1/lora",
                                      "sd-1/lora/fetched.safetensors"]  # fmt: skip


# -- the models folder ---------------------------------------------------------------------------------------


async def test_sync_folder_registers_what_the_folder_holds_with_derived_keys(setup):
    models = setup.models_dir
    tiny_models.sd1_folder(models, name="demo-sd15")
    tiny_models.peft_lora(models / "loras", name="ink")
    tiny_models.vae_folder(models / "vae", name="soft-vae")
    tiny_models.textual_inversion(models / "embeddings", name="style-token", fmt="diffusers")
    (models / "embeddings" / "readme.txt").write_text("not an embedding")

    assert await setup.service.sync_folder() == 4
    records = {record.name: record for record in await setup.registry.find()}
    assert {name: (r.type, r.base, r.format) for name, r in records.items()} == {
        "demo-sd15": ("main", "sd-1", "diffusers"),
        "ink": ("lora", "sd-1", "lycoris"),
        "soft-vae": ("vae", "sd-1", "diffusers"),
        "style-token": ("embedding", "sd-1", "embedding_file"),
    }
    for record in records.values():
        assert record.key == derived_key(record.type, record.name)
        assert record.hash.startswith(FINGERPRINT_PREFIX)
        assert record.source == record.path
    demo = records["demo-sd15"]
    assert (demo.path, demo.file_size) == (str(models / "demo-sd15"), model_size(models / "demo-sd15"))
    assert demo.default_settings == {"width": 512, "height": 512}

    # Idempotent; a model copied in later is picked up by the next sync.
    assert await setup.service.sync_folder() == 0
    tiny_models.peft_lora(models / "loras", name="late", seed=3)
    assert await setup.service.sync_folder() == 1


async def test_listings_resync_when_asked_to(setup, pool):
    service = ModelService(
        setup.registry,
        models_dir=setup.models_dir,
        store=setup.store,
        bus=None,
        cache_stats=None,
        settings=PgModelSettings(pool),
        probe=probe,
        hasher=hash_model,
        sizer=model_size,
        scan=scan_models_folder,
        resync_interval_s=0,
    )
    assert await service.find() == []
    tiny_models.peft_lora(setup.models_dir / "loras", name="dropped-in")
    assert [r.name for r in await service.find(type="lora")] == ["dropped-in"]


async def test_scan_folder(setup, imports, outside):
    installed = await setup.service.register_local(
        imports / "tiny-lora.safetensors", inplace=True, changes=ModelChanges(), source="x"
    )
    found = dict(await setup.service.scan_folder(str(imports)))
    assert found == {
        str(imports / "tiny-embedding.safetensors"): False,
        str(imports / "tiny-lora.safetensors"): True,
        str(imports / "tiny-sd1"): False,
        str(imports / "tiny-sd1-file.safetensors"): False,
    }
    assert installed.path in found

    with pytest.raises(InvalidRequest, match="not directory"):
        await setup.service.scan_folder(str(imports / "tiny-lora.safetensors"))
    with pytest.raises(InvalidRequest):
        await setup.service.scan_folder(str(imports / "missing"))
    with pytest.raises(Forbidden):
        await setup.service.scan_folder(str(outside))
    with pytest.raises(Forbidden):
        await setup.service.scan_folder(str(imports / ".."))
    assert await setup.service.scan_folder(str(setup.models_dir)) == []


# -- changes -------------------------------------------------------------------------------------------------


async def test_renaming_moves_the_files_inside_the_models_folder(setup, imports):
    record = await setup.service.register_local(
        imports / "tiny-sd1-file.safetensors", inplace=False, changes=ModelChanges(), source="x"
    )
    folder = setup.models_dir / "sd-1" / "main"

    renamed = await setup.service.update(record.key, ModelChanges(name="renamed", trigger_phrases=["a", "b"]))

    assert (renamed.name, renamed.trigger_phrases) == ("renamed", ["a", "b"])
    assert renamed.path == str(folder / "renamed.safetensors")
    assert renamed.config_path == str(folder / "renamed.config")
    assert tree(folder)[:2] == ["renamed.config", "renamed.config/model_index.json"]
    assert not (folder / "tiny-sd1-file.safetensors").exists()

    # A new base moves it to that base's folder.
    rebased = await setup.service.update(record.key, ModelChanges(base=ModelFamily.SD2))
    assert rebased.path == str(setup.models_dir / "sd-2" / "main" / "renamed.safetensors")
    assert Path(rebased.path).is_file()


async def test_renaming_a_model_found_in_the_folder_keeps_it_where_it_is(setup):
    tiny_models.peft_lora(setup.models_dir / "loras", name="ink")
    await setup.service.sync_folder()
    (ink,) = await setup.registry.find()

    renamed = await setup.service.update(ink.key, ModelChanges(name="ink-v2"))

    assert renamed.path == str(setup.models_dir / "loras" / "ink-v2.safetensors")
    assert tree(setup.models_dir) == ["loras", "loras/ink-v2.safetensors"]


async def test_renaming_onto_a_taken_name_changes_nothing(setup, imports):
    lora = imports / "tiny-lora.safetensors"
    one = await setup.service.register_local(lora, inplace=False, changes=ModelChanges(name="one"), source="a")
    await setup.service.register_local(lora, inplace=False, changes=ModelChanges(name="two"), source="b")
    before = tree(setup.models_dir)

    with pytest.raises(Conflict):
        await setup.service.update(one.key, ModelChanges(name="two"))

    assert tree(setup.models_dir) == before
    assert (await setup.registry.get(one.key)).name == "one"


async def test_update_of_outside_models_and_bad_paths(setup, imports, outside):
    lora = imports / "tiny-lora.safetensors"
    record = await setup.service.register_local(lora, inplace=True, changes=ModelChanges(), source="a")

    # Outside the models folder: only the record changes.
    renamed = await setup.service.update(record.key, ModelChanges(name="elsewhere", description=None))
    assert (renamed.path, renamed.description) == (record.path, None)
    assert lora.is_file()

    with pytest.raises(Forbidden):
        await setup.service.update(record.key, ModelChanges(path=str(outside / "secret-lora.safetensors")))
    with pytest.raises(ModelNotFound):
        await setup.service.update("missing", ModelChanges(name="x"))


async def test_delete_removes_files_only_inside_the_models_folder(setup, imports):
    copied = await setup.service.register_local(
        imports / "tiny-sd1-file.safetensors", inplace=False, changes=ModelChanges(), source="a"
    )
    in_place = await setup.service.register_local(
        imports / "tiny-lora.safetensors", inplace=True, changes=ModelChanges(), source="b"
    )
    await setup.service.set_cover_image(copied.key, png())
    await setup.service.relate(copied.key, in_place.key)

    await setup.service.delete(copied.key)
    await setup.service.delete(in_place.key)

    assert tree(setup.models_dir) == []  # the checkpoint, its config folder, and the folders they leave empty
    assert (imports / "tiny-lora.safetensors").is_file()
    assert not (setup.store.root / cover_image_key(copied.key)).exists()
    assert await setup.registry.find() == []
    with pytest.raises(ModelNotFound):
        await setup.service.delete(copied.key)


# -- cover images --------------------------------------------------------------------------------------------


async def test_cover_images(setup, imports):
    record = await setup.service.register_local(
        imports / "tiny-lora.safetensors", inplace=True, changes=ModelChanges(), source="a"
    )
    with pytest.raises(NotFound):
        await setup.service.cover_image(record.key)

    await setup.service.set_cover_image(record.key, png(600, 300))

    with Image.open(io.BytesIO(await setup.service.cover_image(record.key))) as image:
        assert (image.format, image.size) == ("PNG", (256, 128))
    assert (await setup.registry.get(record.key)).has_cover_image
    with pytest.raises(UnsupportedMediaType):
        await setup.service.set_cover_image(record.key, b"not an image")
    with pytest.raises(ModelNotFound):
        await setup.service.set_cover_image("missing", png())

    await setup.service.delete_cover_image(record.key)
    assert not (await setup.registry.get(record.key)).has_cover_image
    with pytest.raises(NotFound):
        await setup.service.cover_image(record.key)


# -- conversion ----------------------------------------------------------------------------------------------


async def test_convert_a_checkpoint_into_a_diffusers_folder(setup, imports):
    checkpoint = await setup.service.register_local(
        imports / "tiny-sd1-file.safetensors", inplace=False, changes=ModelChanges(), source="src"
    )
    lora = await setup.service.register_local(
        imports / "tiny-lora.safetensors", inplace=True, changes=ModelChanges(), source="lora"
    )
    await setup.service.relate(checkpoint.key, lora.key)
    await setup.service.set_cover_image(checkpoint.key, png())

    converted = await setup.service.convert(checkpoint.key)

    folder = setup.models_dir / "sd-1" / "main" / "tiny-sd1-file"
    assert (converted.path, converted.format, converted.name, converted.source) == (
        str(folder), "diffusers", "tiny-sd1-file", "src",
    )  # fmt: skip
    assert converted.key != checkpoint.key and converted.hash == hash_model(folder) != checkpoint.hash
    assert converted.converted_at is not None and converted.config_path is None
    assert probe(folder, None).format is ModelFormat.DIFFUSERS
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny-sd1-file"]  # checkpoint and config gone
    assert await setup.service.related(converted.key) == [lora.key]
    assert await setup.service.cover_image(converted.key)
    with pytest.raises(ModelNotFound):
        await setup.registry.get(checkpoint.key)


async def test_convert_refuses_what_it_cannot_convert(setup, imports, pool):
    lora = await setup.service.register_local(
        imports / "tiny-lora.safetensors", inplace=True, changes=ModelChanges(), source="a"
    )
    with pytest.raises(InvalidRequest, match="not a main checkpoint"):
        await setup.service.convert(lora.key)
    with pytest.raises(ModelNotFound):
        await setup.service.convert("missing")

    checkpoint = await setup.service.register_local(
        imports / "tiny-sd1-file.safetensors", inplace=False, changes=ModelChanges(), source="b"
    )
    os.makedirs(setup.models_dir / "sd-1" / "main" / "tiny-sd1-file")
    with pytest.raises(Conflict):
        await setup.service.convert(checkpoint.key)
    shutil.rmtree(setup.models_dir / "sd-1" / "main" / "tiny-sd1-file")

    without = ModelService(
        setup.registry, models_dir=setup.models_dir, store=setup.store, bus=None, cache_stats=None,
        settings=PgModelSettings(pool), probe=probe, hasher=hash_model, sizer=model_size, scan=scan_models_folder,
    )  # fmt: skip
    with pytest.raises(ServiceUnavailable):
        await without.convert(checkpoint.key)
    assert (await setup.registry.get(checkpoint.key)).format == "checkpoint"


# -- relationships, caches, settings -------------------------------------------------------------------------


async def test_related_of_an_unknown_model_is_not_found(setup):
    with pytest.raises(ModelNotFound):
        await setup.service.related("missing")


async def test_stats_sum_the_live_replicas(setup):
    assert await setup.service.stats() is None
    await setup.cache_stats.report(
        "r1", {"hits": 3, "misses": 1, "high_watermark": 100, "in_cache": 2, "cleared": 0, "cache_size": 1000,
               "loaded_model_sizes": {"sd-1:main:a:unet": 10}},
    )  # fmt: skip
    await setup.cache_stats.report(
        "r2", {"hits": 1, "misses": 2, "high_watermark": 300, "in_cache": 1, "cleared": 1, "cache_size": 2000,
               "loaded_model_sizes": {"sd-1:main:b:vae": 20}},
    )  # fmt: skip
    assert await setup.service.stats() == {
        "hits": 4,
        "misses": 3,
        "high_watermark": 300,
        "in_cache": 3,
        "cleared": 1,
        "cache_size": 3000,
        "loaded_model_sizes": {"sd-1:main:a:unet": 10, "sd-1:main:b:vae": 20},
    }


async def test_empty_cache_tells_every_replica(setup):
    await setup.service.empty_cache()
    assert [(m.event, m.room, m.data) for m in setup.bus.messages] == [(CACHE_CLEAR_EVENT, None, {})]


async def test_hf_token(setup):
    assert await setup.service.hf_token() is None
    await setup.service.set_hf_token("hf_abc")
    assert await setup.service.hf_token() == "hf_abc"
    await setup.service.clear_hf_token()
    assert await setup.service.hf_token() is None


async def test_get_by_attrs(setup, imports):
    record = await setup.service.register_local(
        imports / "tiny-lora.safetensors", inplace=True, changes=ModelChanges(), source="a"
    )
    assert await setup.service.get_by_attrs("tiny-lora", "lora", "sd-1") == record
    for args in (("tiny-lora", "lora", "sdxl"), ("tiny-lora", "main", "sd-1"), ("other", "lora", "sd-1")):
        with pytest.raises(ModelNotFound):
            await setup.service.get_by_attrs(*args)
    assert await setup.service.get(record.key) == record
    assert record.type == ModelType.LORA
