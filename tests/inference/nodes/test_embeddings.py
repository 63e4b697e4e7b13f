"""Textual-inversion embeddings: the file formats, the exact effect on a prompt, and the encoder left as it was."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.inference.nodes import ModelComponents, TextEncoder, encode_prompt, encode_sdxl_prompt
from serve_app.inference.nodes.embeddings import TextualInversion, read_embedding, ti_patched
from tests.inference.conftest import TinyModels
from tests.support.tiny_models import textual_inversion


class _NotATensor:
    """Anything a pickle could smuggle in besides tensors and plain containers."""


def _token_rows(encoder: TextEncoder, text: str) -> torch.Tensor:
    """The encoder's own input embeddings of `text`'s tokens: an embedding made of them must encode as the text."""
    ids = encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
    return encoder.encoder.get_input_embeddings().weight.detach()[ids].clone()


def _weights(encoder: TextEncoder) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in encoder.encoder.state_dict().items()}


@pytest.mark.parametrize("fmt", ["a1111", "diffusers"])
def test_a1111_and_diffusers_files_read_as_their_vectors(tmp_path: Path, fmt: str) -> None:
    path = textual_inversion(tmp_path, name="cat-toy", fmt=fmt, vectors=3, width=32, seed=5)  # type: ignore[arg-type]

    embedding = read_embedding(path, name="cat-toy")

    (vectors,) = embedding.vectors
    assert embedding.name == "cat-toy" and vectors.shape == (3, 32)
    expected = torch.randn(3, 32, generator=torch.Generator().manual_seed(5))
    assert torch.equal(vectors, expected)


def test_sdxl_files_hold_one_set_per_text_encoder(tmp_path: Path) -> None:
    embedding = read_embedding(textual_inversion(tmp_path, name="xl", fmt="sdxl", vectors=2, width=32))

    assert [tuple(v.shape) for v in embedding.vectors] == [(2, 32), (2, 64)]
    assert embedding.for_encoder(64, index=1) is embedding.vectors[1]
    assert embedding.for_encoder(32, index=0) is embedding.vectors[0]


def test_other_layouts_and_folders(tmp_path: Path) -> None:
    torch.save({"emb_params": torch.ones(2, 8)}, tmp_path / "emb.pt")
    save_file({"<tok>": torch.ones(8)}, str(tmp_path / "single.safetensors"))
    folder = tmp_path / "learned"
    folder.mkdir()
    torch.save({"<tok>": torch.ones(1, 8)}, folder / "learned_embeds.bin")

    assert read_embedding(tmp_path / "emb.pt").vectors[0].shape == (2, 8)
    assert read_embedding(tmp_path / "single.safetensors").vectors[0].shape == (1, 8)
    assert read_embedding(folder).vectors[0].shape == (1, 8)


def test_unreadable_files_and_foreign_pickles_are_refused(tmp_path: Path) -> None:
    torch.save({"string_to_param": {"*": _NotATensor()}}, tmp_path / "evil.pt")
    save_file({"a": torch.ones(2), "b": torch.ones(2)}, str(tmp_path / "two.safetensors"))

    for path in (tmp_path / "evil.pt", tmp_path / "two.safetensors", tmp_path / "missing.pt"):
        with pytest.raises(GenerationFailed, match="Could not read embedding") as raised:
            read_embedding(path)
        assert raised.value.error_type == "ModelLoadError"


def test_a_trigger_encodes_exactly_as_the_tokens_its_vectors_are(
    models: TinyModels, components: ModelComponents
) -> None:
    (encoder,) = components.text_encoders(models.sd15)
    embedding = TextualInversion(name="two-words", vectors=(_token_rows(encoder, "cat mat"),))

    with ti_patched(encoder.encoder, [("<two-words>", embedding)]) as triggers:
        patched = dataclasses.replace(encoder, triggers=triggers)
        with_embedding = encode_prompt(patched, "a photo of <two-words> on a sofa")
    as_text = encode_prompt(encoder, "a photo of cat mat on a sofa")
    unknown = encode_prompt(encoder, "a photo of <two-words> on a sofa")

    assert torch.equal(with_embedding.embeds, as_text.embeds)
    assert not torch.allclose(with_embedding.embeds, unknown.embeds)


def test_the_encoder_and_tokenizer_are_unchanged_after_the_call(
    tmp_path: Path, models: TinyModels, components: ModelComponents
) -> None:
    (encoder,) = components.text_encoders(models.sd15)
    embedding = read_embedding(textual_inversion(tmp_path, name="toy", vectors=4))
    table = encoder.encoder.get_input_embeddings()
    before, tokens = _weights(encoder), len(encoder.tokenizer)

    with pytest.raises(RuntimeError, match="boom"), ti_patched(encoder.encoder, [("<toy>", embedding)]) as triggers:
        assert triggers == {"<toy>": tuple(range(table.num_embeddings, table.num_embeddings + 4))}
        assert encoder.encoder.get_input_embeddings().num_embeddings == table.num_embeddings + 4
        raise RuntimeError("boom")

    assert encoder.encoder.get_input_embeddings() is table
    assert len(encoder.tokenizer) == tokens
    after = _weights(encoder)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_an_embedding_for_another_width_names_itself(
    tmp_path: Path, models: TinyModels, components: ModelComponents
) -> None:
    (encoder,) = components.text_encoders(models.sd15)
    wide = read_embedding(textual_inversion(tmp_path, name="wide", width=64), name="wide")

    with (
        pytest.raises(GenerationFailed, match="Embedding wide has token width 64") as raised,
        ti_patched(encoder.encoder, [("<wide>", wide)]),
    ):
        pass

    assert raised.value.error_type == "IncompatibleEmbedding"
    assert encoder.encoder.get_input_embeddings().num_embeddings == len(encoder.tokenizer)


def test_sdxl_applies_clip_l_and_clip_g_to_their_encoders(models: TinyModels, components: ModelComponents) -> None:
    first, second = components.text_encoders(models.sdxl)
    embedding = TextualInversion(name="xl", vectors=(_token_rows(first, "cat mat"), _token_rows(second, "cat mat")))
    prompt = "a photo of <xl>"

    with (
        ti_patched(first.encoder, [("<xl>", embedding)], index=0) as first_triggers,
        ti_patched(second.encoder, [("<xl>", embedding)], index=1) as second_triggers,
    ):
        encoders = (
            dataclasses.replace(first, triggers=first_triggers),
            dataclasses.replace(second, triggers=second_triggers),
        )
        with_embedding = encode_sdxl_prompt(encoders, prompt)
    as_text = encode_sdxl_prompt((first, second), "a photo of cat mat")

    assert torch.equal(with_embedding.embeds, as_text.embeds)
    # The pooled embedding is taken at the EOS, not at the (now largest) embedding token ids.
    assert with_embedding.pooled is not None and as_text.pooled is not None
    assert torch.allclose(with_embedding.pooled, as_text.pooled, atol=1e-6)


def test_embeddings_are_cached_whole(tmp_path: Path, components: ModelComponents) -> None:
    path = textual_inversion(tmp_path, name="cached", vectors=2)
    spec = ModelSpec(
        name="cached",
        family=ModelFamily.SD1,
        format=ModelFormat.EMBEDDING_FILE,
        path=str(path),
        type=ModelType.EMBEDDING,
    )

    assert components.embedding(spec) is components.embedding(spec)
    assert components.cache.stats()["loaded_model_sizes"]["sd-1:embedding:cached:"] == 2 * 32 * 4
