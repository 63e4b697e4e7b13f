"""hash_model() and model_size(): streamed content hashes of model files and folders."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import blake3
import pytest

from serve_app.domain.errors import InvalidRequest
from serve_app.storage.model_hash import hash_model, model_size

# The files of the `folder` fixture, in sorted order.
FILES = ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (root / "unet" / "config.json").write_text('{"in_channels": 4}')
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(1000))
    return root


def test_a_files_hash_is_of_its_bytes_across_chunks(tmp_path: Path) -> None:
    # Past one 8 MiB read, so the streaming loop has to join chunks.
    data = os.urandom(8 * 1024 * 1024 + 3)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert hash_model(path) == f"blake3:{blake3.blake3(data).hexdigest()}"
    assert hash_model(path, "sha256") == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert model_size(path) == len(data)


def test_a_folders_hash_is_the_documented_digest_of_its_file_lines(folder: Path) -> None:
    # "<relative path>\0<file digest>\n" per non-hidden file, sorted by path, hashed with the same algorithm.
    sha_lines = "".join(f"{name}\0{hashlib.sha256((folder / name).read_bytes()).hexdigest()}\n" for name in FILES)
    assert hash_model(folder, "sha256") == f"sha256:{hashlib.sha256(sha_lines.encode()).hexdigest()}"
    blake_lines = "".join(f"{name}\0{blake3.blake3((folder / name).read_bytes()).hexdigest()}\n" for name in FILES)
    assert hash_model(folder) == f"blake3:{blake3.blake3(blake_lines.encode()).hexdigest()}"


def test_a_folders_hash_depends_on_content_and_names_not_location(folder: Path, tmp_path: Path) -> None:
    original = hash_model(folder)
    assert hash_model(folder) == original
    copy = shutil.copytree(folder, tmp_path / "elsewhere" / "copy")
    assert hash_model(copy) == original

    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[500] ^= 1
    weights.write_bytes(bytes(data))
    edited = hash_model(copy)
    assert edited != original

    weights.rename(weights.with_name("renamed.safetensors"))
    assert hash_model(copy) not in (original, edited)


def test_hidden_files_and_linked_folders_are_left_out(folder: Path) -> None:
    original, size = hash_model(folder), model_size(folder)
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.lock").write_bytes(b"x" * 100)
    (folder / "unet" / ".diffusion_pytorch_model.safetensors.part").write_bytes(b"partial")
    # A link back up the tree would loop forever if followed.
    (folder / "unet" / "loop").symlink_to(folder, target_is_directory=True)
    assert hash_model(folder) == original
    assert model_size(folder) == size == sum((folder / name).stat().st_size for name in FILES)


def test_linked_files_count_by_their_content(folder: Path, tmp_path: Path) -> None:
    # Hugging Face snapshots are folders of links into a blob store.
    snapshot = tmp_path / "snapshot"
    (snapshot / "unet").mkdir(parents=True)
    for name in FILES:
        (snapshot / name).symlink_to(folder / name)
    assert hash_model(snapshot) == hash_model(folder)
    assert model_size(snapshot) == model_size(folder)


def test_bad_requests(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InvalidRequest, match="Unknown hash algorithm 'md5'"):
        hash_model(tmp_path / "file", "md5")
    with pytest.raises(InvalidRequest, match="does not exist"):
        hash_model(tmp_path / "missing")
