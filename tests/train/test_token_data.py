"""Pretraining data: the hash split, token files and their cache, user inputs, batches by index."""

from __future__ import annotations

import json
import os
import random
import string
from pathlib import Path

import numpy as np
import pytest
import torch

from llmlab.errors import DataError
from llmlab.tokenizers.hf_io import load_tokenizer
from llmlab.train.config import PretrainDataConfig
from llmlab.train.token_data import (
    SequenceSampler,
    is_val,
    iter_documents,
    prepare_token_files,
)

# ---------------------------------------------------------------------- is_val


def random_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_letters + " é中", k=rng.randint(1, 40))) for _ in range(n)]


def test_is_val_is_deterministic_and_order_free() -> None:
    texts = random_strings(500)
    first = {t: is_val(t, 0.1) for t in texts}
    shuffled = texts[:]
    random.Random(1).shuffle(shuffled)
    assert {t: is_val(t, 0.1) for t in shuffled} == first
    assert {t: is_val(t, 0.1) for t in texts[:50]} == {t: first[t] for t in texts[:50]}  # other docs don't matter


def test_is_val_fraction_is_about_right() -> None:
    """10,000 strings at fraction 0.1: binomial sd = sqrt(0.1 * 0.9 / 10000) = 0.003; allow 4 sd."""
    texts = set(random_strings(10_000, seed=2))
    share = sum(is_val(t, 0.1) for t in texts) / len(texts)
    assert abs(share - 0.1) < 4 * (0.1 * 0.9 / len(texts)) ** 0.5


def test_is_val_is_nested_in_the_fraction() -> None:
    """The hash is compared with the fraction: a val document stays val when the fraction grows."""
    for t in random_strings(2000, seed=3):
        if is_val(t, 0.02):
            assert is_val(t, 0.2)
        assert not is_val(t, 0.0)


# ---------------------------------------------------------------------- token files


def text_docs(n: int = 60) -> list[str]:
    rng = random.Random(0)
    words = ["the", "river", "town", "baker", "sells", "bread", "on", "Monday", "42", "apples", "café"]
    return [" ".join(rng.choices(words, k=rng.randint(3, 20))) + "." for _ in range(n)]


@pytest.fixture
def tokenizer(tokenizer_dir: Path):
    return load_tokenizer(tokenizer_dir)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(text_docs()) + "\n", encoding="utf-8")
    return path


def prepare(cfg: PretrainDataConfig, tokenizer, tokenizer_dir: Path, messages: list[str] | None = None):
    eos = tokenizer.special_tokens["<|endoftext|>"]
    log = messages.append if messages is not None else (lambda m: None)
    return prepare_token_files(cfg, tokenizer, (tokenizer_dir / "tokenizer.json").read_bytes(), eos_id=eos, log=log)


def test_token_files_hold_each_document_then_eos_in_order(corpus: Path, tmp_path: Path, tokenizer,
                                                          tokenizer_dir: Path) -> None:
    """train.bin = concat(encode(doc) + [eos]) over the train documents in input order; val.bin the same
    for the val documents; n_bytes = sum(len(utf8(doc)) + 1), the separator counted as a byte."""
    cfg = PretrainDataConfig(input=(str(corpus),), cache_dir=str(tmp_path / "cache"), val_fraction=0.3)
    train, val = prepare(cfg, tokenizer, tokenizer_dir)
    eos = tokenizer.special_tokens["<|endoftext|>"]
    expected: dict[str, list[int]] = {"train": [], "val": []}
    n_bytes = {"train": 0, "val": 0}
    for doc in text_docs():
        split = "val" if is_val(doc, 0.3) else "train"
        expected[split] += [*tokenizer.encode(doc), eos]
        n_bytes[split] += len(doc.encode("utf-8")) + 1
    assert expected["train"] and expected["val"]
    for split, tf in (("train", train), ("val", val)):
        arr = tf.array()
        assert arr.dtype == np.uint16 and tf.dtype == "uint16"
        assert arr.tolist() == expected[split]
        assert tf.n_tokens == len(expected[split])
        assert tf.n_bytes == n_bytes[split]


def test_second_call_reads_the_cache(corpus: Path, tmp_path: Path, tokenizer, tokenizer_dir: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = PretrainDataConfig(input=(str(corpus),), cache_dir=str(tmp_path / "cache"), val_fraction=0.3)
    first = prepare(cfg, tokenizer, tokenizer_dir)

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(tokenizer, "encode_batch", refuse)
    messages: list[str] = []
    second = prepare(cfg, tokenizer, tokenizer_dir, messages)
    assert any("from the cache" in m for m in messages)
    assert second == first
    assert second[0].array().tolist() == first[0].array().tolist()


def test_a_changed_input_or_tokenizer_misses_the_cache(corpus: Path, tmp_path: Path, tokenizer,
                                                        tokenizer_dir: Path) -> None:
    cfg = PretrainDataConfig(input=(str(corpus),), cache_dir=str(tmp_path / "cache"), val_fraction=0.3)
    folders = {prepare(cfg, tokenizer, tokenizer_dir)[0].path.parent}

    st = corpus.stat()  # same bytes, new modification time
    os.utime(corpus, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    messages: list[str] = []
    train, _ = prepare(cfg, tokenizer, tokenizer_dir, messages)
    assert any(m.startswith("tokenizing") for m in messages)
    folders.add(train.path.parent)

    with corpus.open("a", encoding="utf-8") as f:  # new size and new content
        f.write("\nA brand new document about a baker.\n")
    train, val = prepare(cfg, tokenizer, tokenizer_dir)
    assert "A brand new document" in tokenizer.decode([*train.array().tolist(), *val.array().tolist()])
    folders.add(train.path.parent)

    from llmlab.data.chat import CHAT_SPECIALS
    from llmlab.tokenizers.bpe_train import train_bpe

    other_dir = tmp_path / "other-tokenizer"
    train_bpe(text_docs(), vocab_size=300, special_tokens=CHAT_SPECIALS).save(other_dir)
    other = load_tokenizer(other_dir)
    train, _ = prepare(cfg, other, other_dir)
    assert train.array().max() < 300 and train.path.parent not in folders
    folders.add(train.path.parent)
    assert len(folders) == 4  # four different keys, four folders


def test_user_inputs_txt_jsonl_and_saved_dataset(tmp_path: Path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\nline two\n\n\n  second doc  \n\nthird\n", encoding="utf-8")
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["j1", "j2"])) + "\n",
                     encoding="utf-8")
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": ["d1", "d2", "d3"]}).save_to_disk(str(folder))
    cfg = PretrainDataConfig(input=(str(txt), str(jsonl), str(folder)))
    assert list(iter_documents(cfg)) == ["first doc\nline two", "second doc", "third", "j1", "j2", "d1", "d2", "d3"]


def test_builtin_corpus_when_no_input() -> None:
    from llmlab.data.config import GenerateConfig
    from llmlab.data.corpora import pretrain_documents

    cfg = PretrainDataConfig(corpus_chars=20_000)
    assert list(iter_documents(cfg)) == list(pretrain_documents(GenerateConfig(kind="pretrain", chars=20_000)))


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=r"nope\.txt"):
        list(iter_documents(PretrainDataConfig(input=(str(missing),))))


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2:"):
        list(iter_documents(PretrainDataConfig(input=(str(path),))))


def test_jsonl_without_text_field_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "notext.jsonl"
    path.write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"notext\.jsonl"):
        list(iter_documents(PretrainDataConfig(input=(str(path),))))


def test_empty_input_is_a_data_error(tmp_path: Path, tokenizer, tokenizer_dir: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_text("\n\n\n", encoding="utf-8")
    cfg = PretrainDataConfig(input=(str(path),), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError):
        prepare(cfg, tokenizer, tokenizer_dir)


# ---------------------------------------------------------------------- SequenceSampler


def chunk_of(row: np.ndarray, L: int) -> int:
    """With tokens = arange, a row starting at token c * L is chunk c."""
    assert int(row[0]) % L == 0
    return int(row[0]) // L


def test_a_batch_of_one_epoch_is_a_permutation_of_the_chunks() -> None:
    """tokens 0..40, L = 4 -> (41 - 1) // 4 = 10 chunks; chunk c = tokens 4c .. 4c + 4 (inputs 4c .. 4c+3,
    targets 4c+1 .. 4c+4). Sequences 0..9 are epoch 0, 10..19 epoch 1: each a permutation of 0..9."""
    L, n = 4, 10
    sampler = SequenceSampler(np.arange(n * L + 1, dtype=np.uint16), L, seed=0)
    assert sampler.n_chunks == n
    for epoch in range(3):
        x, y = sampler.batch(epoch * n, n)
        assert x.shape == y.shape == (n, L) and x.dtype == y.dtype == torch.int64
        chunks = [chunk_of(r, L) for r in x.numpy()]
        assert sorted(chunks) == list(range(n))
        for c, row in zip(chunks, x.numpy(), strict=True):
            assert row.tolist() == list(range(c * L, c * L + L))
        assert (y == x + 1).all()  # targets are the inputs shifted by one token
        assert (y[:, :-1] == x[:, 1:]).all()
    first, second = (sampler.batch(e * n, n)[0][:, 0].tolist() for e in (0, 1))
    assert first != second  # each epoch draws its own order
    assert first != list(range(0, n * L, L))  # shuffled


def test_batches_are_a_function_of_the_index_and_seed() -> None:
    tokens = np.arange(201, dtype=np.uint16)
    a, b = SequenceSampler(tokens, 8, seed=5), SequenceSampler(tokens, 8, seed=5)
    x_all, _ = a.batch(0, 60)  # two epochs and a half
    for start in (53, 21, 0, 40):  # asked in another order and size: the same rows
        assert b.batch(start, 7)[0].tolist() == x_all[start:start + 7].tolist()
    assert torch.equal(torch.cat([b.batch(i, 1)[0] for i in range(60)]), x_all)
    other = SequenceSampler(tokens, 8, seed=6).batch(0, 25)[0]
    assert not torch.equal(other, x_all[:25])


def test_unshuffled_sampler_reads_in_order() -> None:
    sampler = SequenceSampler(np.arange(13, dtype=np.uint16), 4, seed=0, shuffle=False)
    x, y = sampler.batch(0, 4)  # 3 chunks: the 4th sequence wraps to chunk 0
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [0, 1, 2, 3]]
    assert y.tolist()[2] == [9, 10, 11, 12]


def test_too_small_split_is_a_data_error() -> None:
    """seq_len 8 needs 9 tokens for one (input, target) sequence."""
    SequenceSampler(np.arange(9, dtype=np.uint16), 8, seed=0)
    with pytest.raises(DataError, match="val split has 8 tokens"):
        SequenceSampler(np.arange(8, dtype=np.uint16), 8, seed=0, name="val")
