""".tiktoken rank files: llmlab reads and writes them and encodes exactly as tiktoken does.

tiktoken downloads OpenAI's rank files from the internet, which tests cannot reach, so the artifacts
are built here faithfully: a BPE trained on varied text, handed to tiktoken as a `tiktoken.Encoding`,
its `_mergeable_ranks` written in the rank-file format by the test itself (base64 token, rank), read by
llmlab, and every string encoded by both with OpenAI's published patterns (r50k, cl100k, o200k).
"""

from __future__ import annotations

import base64
import inspect
import json
import warnings
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.errors import UserError
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.hf_io import load_tokenizer
from llmlab.tokenizers.pre_tokenizers import ENCODING_PATTERNS, PreTokenizer
from llmlab.tokenizers.tiktoken_file import (
    ENCODING_SPECIALS,
    bpe_parts,
    load_tiktoken,
    merges_from_ranks,
    read_ranks,
    save_tiktoken,
)

tiktoken = pytest.importorskip("tiktoken")
tiktoken_load = pytest.importorskip("tiktoken.load")
tokenizers = pytest.importorskip("tokenizers")

EOT = "<|endoftext|>"
PROSE = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=60_000)))
CODE = [inspect.getsource(json.decoder), inspect.getsource(base64)[:20_000]]
VARIED = [
    "Hello, world! It's a test; they're here, I'VE seen we'll. DON'T ſtop",
    "emoji 👍🏽 family 👨‍👩‍👧 flag 🇫🇷 🤖 ❤️", "CJK 日本語のテキスト、中文字符 한국어 ひらがな カタカナ",
    "combining e\u0301 a\u0308 vs é ä", "windows\r\nline\r\n\r\nends  \n \n", "nul \x00 \x1c\x1f \x7f",
    "numbers 0 12 345 6789 0000 1234567890 3.14159 -42 1,000,000 ٣٤٥ ⅫⅣ ①②", "\ttabs\t\tand\t \t mixed   ",
    "a" + " " * 37 + "b     \n    c", "x" * 300, "URL https://example.com/a/b?c=d&e=f#g /usr/bin/env",
    "Ελληνικά Русский текст हिन्दी العربية עברית ไทย",
]
TRAIN = PROSE + CODE + VARIED * 5


def code_point_sweep(planes: tuple[int, ...] = (0, 1, 14), chunk: int = 4096) -> list[str]:
    """Every code point of the planes except surrogates, in strings of `chunk` consecutive ones."""
    points = [c for p in planes for c in range(p << 16, (p + 1) << 16) if not 0xD800 <= c < 0xE000]
    return ["".join(map(chr, points[i:i + chunk])) for i in range(0, len(points), chunk)]


@cache
def rank_file(encoding: str, directory: Path) -> tuple[Path, tiktoken.Encoding]:
    """A .tiktoken file of a BPE trained on TRAIN, written from tiktoken's own ranks, and the tiktoken
    Encoding with OpenAI's pattern and special tokens for `encoding` over it."""
    trained = train_bpe(TRAIN, vocab_size=1500, pre_tokenizer="cl100k" if "k_base" in encoding else "gpt2")
    enc = trained.to_tiktoken()
    path = directory / f"{encoding}.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r
                              for t, r in sorted(enc._mergeable_ranks.items(), key=lambda t: t[1])))
    specials = {s: i for s, i in ENCODING_SPECIALS[encoding].items() if i >= len(enc._mergeable_ranks)}
    ref = tiktoken.Encoding(encoding, pat_str=ENCODING_PATTERNS[encoding], mergeable_ranks=enc._mergeable_ranks,
                            special_tokens=specials)
    return path, ref


ENCODINGS = ["r50k_base", "cl100k_base", "o200k_base"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiktoken")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_rank_file_encodes_and_decodes_like_tiktoken(encoding, files):
    path, ref = rank_file(encoding, files)
    tok = load_tokenizer(path)  # the pattern and specials by the file's name
    assert tok.pre_tokenizer.pattern == ref._pat_str and tok.ignore_merges
    texts = [*PROSE[:40], *CODE, *VARIED, "".join(VARIED)]
    for text in texts:
        ids = tok.encode(text)
        assert ids == ref.encode_ordinary(text), text[:80]
        assert tok.decode(ids) == ref.decode(ids) == text
    special = f"a{EOT}b"
    assert tok.encode(special, allowed_special="all") == ref.encode(special, allowed_special="all")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_code_point_sweep_encodes_like_tiktoken(encoding, files):
    """Planes 0, 1 and 14 (every code point but the surrogates) in 4,096-character strings."""
    path, ref = rank_file(encoding, files)
    tok = load_tokenizer(path)
    sweep = code_point_sweep()
    assert sum(map(len, sweep)) == 0xF800 + 0x10000 + 0x10000
    assert ref.encode_ordinary_batch(sweep, num_threads=1) == [tok.encode(s) for s in sweep]


def test_the_merges_rebuilt_from_ranks_are_the_trained_ones(files):
    """A BPE-trained rank file gives back exactly the merge list it was trained with."""
    trained = train_bpe(TRAIN, vocab_size=1200, pre_tokenizer="cl100k")
    assert merges_from_ranks(trained.vocab) == trained.merges


def test_a_file_hf_trained_has_its_byte_ranks_out_of_byte_order(tmp_path):
    """HF numbers the 256 bytes by character ("!" is 0), so single bytes are not ranks 0..255 in byte
    order; the rank file, and llmlab reading it, follow the file."""
    bl = tokenizers.implementations.ByteLevelBPETokenizer(add_prefix_space=False)
    bl.train_from_iterator(TRAIN, vocab_size=800, min_frequency=2, show_progress=False)
    bl.save(str(tmp_path / "tokenizer.json"))
    enc = load_tokenizer(tmp_path / "tokenizer.json").to_tiktoken()
    assert enc._mergeable_ranks[b"!"] == 0
    (tmp_path / "gpt2.tiktoken").write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r
                                                      for t, r in enc._mergeable_ranks.items()))
    tok = load_tiktoken(tmp_path / "gpt2.tiktoken")
    ref = tiktoken.Encoding("hf", pat_str=ENCODING_PATTERNS["gpt2"], mergeable_ranks=enc._mergeable_ranks,
                            special_tokens={})
    for text in [*VARIED, *PROSE[:20], *code_point_sweep((0,), 8192)]:
        assert tok.encode(text) == ref.encode_ordinary(text), text[:60]


def test_the_construction_on_a_hand_worked_case():
    """ranks a0 b1 c2 ab3 abc4 bc5: "abc" over ranks < 4 is a b c -> ab c, so merge (ab, c); "bc" is
    (b, c). tiktoken's BPE of "xbc..." would reach bc; llmlab's merge list has both."""
    ranks = {bytes([i]): i for i in range(256)} | {b"ab": 256, b"abc": 257, b"bc": 258}
    assert bpe_parts(b"abc", ranks, max_rank=257) == [b"ab", b"c"]
    assert bpe_parts(b"abc", ranks) == [b"abc"]
    assert merges_from_ranks(ranks) == [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c")]


def test_a_token_no_pair_makes_is_refused(tmp_path):
    """"abc" with neither "ab" nor "bc" a token: its bytes stay three parts."""
    ranks = {bytes([i]): i for i in range(256)} | {b"abc": 256}
    with pytest.raises(UserError, match=r"token b'abc' \(rank 256\).*3 parts"):
        merges_from_ranks(ranks)
    path = tmp_path / "r50k_base.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    with pytest.raises(UserError, match=f"{path}: token"):
        load_tokenizer(path)


def test_malformed_rank_files_name_the_line(tmp_path):
    path = tmp_path / "cl100k_base.tiktoken"
    path.write_text("IQ== 0\nIg== one\n")
    with pytest.raises(UserError, match=f"{path}:2: not 'base64-token rank'"):
        read_ranks(path)
    path.write_text("IQ== 0\nIg== 0\n")
    with pytest.raises(UserError, match=f"{path}:2: rank 0 is already on line 1"):
        read_ranks(path)
    path.write_text("IQ== 0\n")
    with pytest.raises(UserError, match="all 256 bytes; 255 are missing"):
        load_tokenizer(path)


def test_without_a_known_name_the_pattern_must_be_given(files):
    path, ref = rank_file("cl100k_base", files)
    other = files / "tokenizer.model"  # Meta's Llama 3 file is a rank file of this name
    other.write_bytes(path.read_bytes())
    with pytest.raises(UserError, match="holds no split pattern; name its encoding"):
        load_tokenizer(other)
    with pytest.raises(UserError, match="unknown encoding 'cl200k'"):
        load_tokenizer(other, encoding="cl200k")
    tok = load_tokenizer(other, pattern=ref._pat_str, special_tokens={"<|x|>": 5000})
    assert tok.special_tokens == {"<|x|>": 5000}
    assert tok.encode("Hello 0000 world") == ref.encode_ordinary("Hello 0000 world")
    assert load_tokenizer(other, encoding="cl100k_base").encode("12345") == ref.encode("12345")


def test_save_writes_what_tiktoken_reads(files, tmp_path):
    path, ref = rank_file("o200k_base", files)
    tok = load_tokenizer(path)
    out = tmp_path / "again.tiktoken"
    save_tiktoken(tok, out)
    assert tiktoken_load.load_tiktoken_bpe(str(out)) == ref._mergeable_ranks
    assert out.read_bytes() == path.read_bytes()


def test_save_refuses_what_tiktoken_cannot_express(tmp_path):
    tok = train_bpe(PROSE, vocab_size=400, normalizer="nfkc")
    with pytest.raises(UserError, match="normalizes"):
        save_tiktoken(tok, tmp_path / "x.tiktoken")
    assert not (tmp_path / "x.tiktoken").exists()


# ---------------------------------------------------------------------- several merges making one token


def converter_merges(vocab: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """What HF's tiktoken converter (and Meta's Llama 3 tokenizer.json) lists: for each token, in id order,
    every split into two vocabulary tokens, ordered by the ids of the parts."""
    merges = []
    for token, _ in sorted(vocab.items(), key=lambda t: t[1]):
        splits = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in vocab and token[k:] in vocab]
        merges += sorted(splits, key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
    return merges


@cache
def duplicated(ignore_merges: bool) -> BPETokenizer:
    trained = train_bpe(TRAIN, vocab_size=1500, special_tokens=[EOT], pre_tokenizer="cl100k")
    merges = converter_merges(trained.vocab)
    return BPETokenizer(trained.vocab, merges, special_tokens=trained.special_tokens,
                        pre_tokenizer=PreTokenizer.named("cl100k"), ignore_merges=ignore_merges)


@pytest.mark.parametrize("ignore_merges", [True, False])
def test_several_merges_making_one_token_convert_to_rank_equals_id(ignore_merges, tmp_path):
    """llmlab, tiktoken (rank = id) and HF tokenizers (the same merges in a tokenizer.json) agree."""
    tok = duplicated(ignore_merges)
    made = [a + b for a, b in tok.merges]
    assert len(made) - len(set(made)) > 200  # many tokens are made by more than one merge
    enc = tok.to_tiktoken()
    assert enc._mergeable_ranks == tok.vocab
    tok.save(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in [*VARIED, *PROSE[:30], *CODE, *code_point_sweep((0, 1), 8192)]:
        ids = tok.encode(text)
        assert enc.encode_ordinary(text) == ids == hf.encode(text, add_special_tokens=False).ids, text[:60]
        assert enc.decode_bytes(ids) == text.encode()


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=60) | st.text("ab01 \n'ſ", max_size=40))
def test_several_merges_making_one_token_random_text(text):
    tok = duplicated(True)
    assert tok.to_tiktoken().encode_ordinary(text) == tok.encode(text)


def test_merges_of_one_token_apart_are_still_refused():
    """Ids must not decrease in merge order: a second merge of an early token after later ones cannot be a
    rank = id Encoding (tiktoken would join that pair earlier than llmlab does)."""
    tok = duplicated(True)
    late = next(m for m in tok.merges[300:] if len(m[0] + m[1]) > 2)
    moved = [m for m in tok.merges if m != late] + [late]
    with pytest.raises(UserError, match="ids must not decrease in merge order"):
        BPETokenizer(tok.vocab, moved, pre_tokenizer=tok.pre_tokenizer, ignore_merges=True).to_tiktoken()


def test_exporting_the_cl100k_pattern_warns_once_with_an_example():
    tok = duplicated(True)
    tok = BPETokenizer(tok.vocab, tok.merges, pre_tokenizer=PreTokenizer.from_pattern(ENCODING_PATTERNS[
        "cl100k_base"]), ignore_merges=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok.to_tiktoken()
    (w,) = caught
    assert "'\\\\p{N}{1,3}+'" in str(w.message) and "'0000' splits as ['0000'] in HF" in str(w.message)
