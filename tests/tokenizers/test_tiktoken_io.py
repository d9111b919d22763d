"""llmlab tokenizers as `tiktoken.Encoding`s: the same ids as llmlab (and HF) on any text, or a UserError."""

from __future__ import annotations

from functools import cache
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.errors import UserError
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.hf_io import load_tokenizer, save_tokenizer
from llmlab.tokenizers.tiktoken_io import to_tiktoken

tiktoken = pytest.importorskip("tiktoken")
tokenizers = pytest.importorskip("tokenizers")

EOT = "<|endoftext|>"
# the hard cases of test_hf_io.py, shorter
HARD = [
    "", " ", "Hello, world! It's a test; they're here, I'VE seen we'll.",
    "emoji 👍🏽 family 👨‍👩‍👧 flag 🇫🇷", "CJK 日本語のテキスト、中文 한국어", "combining e\u0301 a\u0308 vs é ä",
    "windows\r\nline\r\n\r\nends", "nul \x00 byte \x00\x00 and \x1c\x1f controls \x7f", "\ttabs\t\tand\t \t mixed",
    "a" + " " * 37 + "b     \n    c", "trailing spaces   ", "\n\n\n",
    "numbers 0 12 345 6789 1234567890 3.14159 -42 1,000,000 ٣٤٥ ⅫⅣ ①②",
    'def f(x):\n    return {"k": x ** 2}  # code\n', "ΑΣ İstanbul ß ﬁ ＡＢＣ", "nbsp\u00a0x\u3000y\u2028z\u200bw",
    "x" * 300,
]


@cache
def trained(pre_tokenizer: str, normalizer: str = "none") -> BPETokenizer:
    docs = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=50_000)))
    return train_bpe(docs + HARD * 3, vocab_size=1000, special_tokens=[EOT, "<|pad|>"], pre_tokenizer=pre_tokenizer,
                     normalizer=normalizer)


PRE_TOKENIZERS = ["gpt2", "cl100k", "digits", "whitespace"]


@pytest.mark.parametrize("pre_tokenizer", PRE_TOKENIZERS)
def test_tiktoken_encodes_and_decodes_like_llmlab(pre_tokenizer):
    tok = trained(pre_tokenizer)
    enc = tok.to_tiktoken()
    assert enc.n_vocab == tok.vocab_size
    for s in [*HARD, f"text {EOT} as text"]:
        ids = tok.encode(s)
        assert enc.encode_ordinary(s) == ids, s
        assert enc.encode(s, disallowed_special=()) == ids, s
        assert enc.decode_bytes(ids) == tok.decode_bytes(ids)


@pytest.mark.parametrize("pre_tokenizer", PRE_TOKENIZERS)
def test_tiktoken_specials_when_allowed(pre_tokenizer):
    tok = trained(pre_tokenizer)
    enc = to_tiktoken(tok, "mine")
    assert enc.name == "mine"
    for s in [EOT, f"one{EOT}two<|pad|>", f" {EOT}\n{HARD[3]}<|endoftext"]:
        assert enc.encode(s, allowed_special="all") == tok.encode(s, allowed_special="all"), s
        assert enc.encode(s, allowed_special={EOT}, disallowed_special=()) == tok.encode(s, allowed_special={EOT}), s
    with pytest.raises(ValueError):  # tiktoken raises on a special's text by default, as llmlab can be told to
        enc.encode(EOT)


def test_a_file_hf_trained_converts_and_encodes_like_hf(tmp_path):
    """HF numbers bytes by character and merges after them: ids still increase in merge order."""
    bl = tokenizers.implementations.ByteLevelBPETokenizer(add_prefix_space=False)
    bl.train_from_iterator(HARD * 5, vocab_size=400, min_frequency=2, special_tokens=[EOT], show_progress=False)
    bl.save(str(tmp_path / "tokenizer.json"))
    enc = load_tokenizer(tmp_path).to_tiktoken()
    for s in [*HARD, f"a{EOT}b"]:
        assert enc.encode(s, allowed_special="all") == bl.encode(s).ids, s


@pytest.mark.parametrize("normalizer", ["nfc", "nfkc", "lowercase"])
def test_normalizers_cannot_be_tiktoken(normalizer):
    with pytest.raises(UserError, match=f"normalizes with '{normalizer}'"):
        trained("gpt2", normalizer).to_tiktoken()


def _variant(tok: BPETokenizer, **kwargs) -> BPETokenizer:
    settings = dict(special_tokens=tok.special_tokens, pre_tokenizer=tok.pre_tokenizer) | kwargs
    return BPETokenizer(settings.pop("vocab", tok.vocab), settings.pop("merges", tok.merges), **settings)


def test_add_prefix_space_cannot_be_tiktoken():
    with pytest.raises(UserError, match="prefix space"):
        _variant(trained("gpt2"), add_prefix_space=True).to_tiktoken()


def test_ids_out_of_merge_order_raise():
    tok = trained("gpt2")
    vocab = dict(tok.vocab)
    first, second = (a + b for a, b in tok.merges[:2])
    vocab[first], vocab[second] = vocab[second], vocab[first]
    with pytest.raises(UserError, match="ids must not decrease in merge order"):
        _variant(tok, vocab=vocab).to_tiktoken()


def test_a_token_no_merge_makes_raises():
    tok = trained("gpt2")
    vocab = {**tok.vocab, b"zqzq": 5000}
    with pytest.raises(UserError, match="made by no merge"):
        _variant(tok, vocab=vocab).to_tiktoken()


def test_a_token_its_merges_do_not_reach_raises():
    """merges a+b, b+c, then ab+c: "abc" encodes to a, bc; tiktoken would take "abc" whole."""
    vocab = {bytes([i]): i for i in range(256)} | {b"bc": 256, b"ab": 257, b"abc": 258}
    tok = BPETokenizer(vocab, [(b"b", b"c"), (b"a", b"b"), (b"ab", b"c")])
    assert merge_by_rank(b"abc", {pair: r for r, pair in enumerate(tok.merges)}) == [b"a", b"bc"]
    assert [tok.token_bytes(i) for i in tok.encode_bytes(b"abc")] == [b"a", b"bc"]
    with pytest.raises(UserError, match=r"encodes to \[b'a', b'bc'\]"):
        tok.to_tiktoken()
    _variant(tok, ignore_merges=True).to_tiktoken()  # with ignore_merges llmlab takes it whole too


def merge_by_rank(data: bytes, ranks: dict[tuple[bytes, bytes], int]) -> list[bytes]:
    """An independent BPE on bytes, the oracle for BPETokenizer.encode_bytes: join the lowest-ranked pair,
    everywhere. b"hello", {(b"h", b"e"): 0, (b"l", b"l"): 1, (b"he", b"ll"): 2} -> [b"hell", b"o"]"""
    parts = [bytes([b]) for b in data]
    while len(parts) > 1:
        best = min(pairwise(parts), key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        merged: list[bytes] = []
        i = 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def test_merge_by_rank_matches_the_tokenizer():
    tok = trained("gpt2")
    ranks = {pair: r for r, pair in enumerate(tok.merges)}
    for word in ["hello", " the", "aaaaaaa", "日本語"]:
        assert [tok.vocab[t] for t in merge_by_rank(word.encode(), ranks)] == tok.encode_ordinary(word)
        assert tok.encode_bytes(word.encode()) == tok.encode_ordinary(word)


_ENCODERS: dict[str, tuple] = {}


def _three(pre_tokenizer: str, tmp_path_factory) -> tuple:
    if pre_tokenizer not in _ENCODERS:
        tok = trained(pre_tokenizer)
        directory = tmp_path_factory.mktemp("hf")
        save_tokenizer(tok, directory)
        _ENCODERS[pre_tokenizer] = tok, tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json")), \
            tok.to_tiktoken()
    return _ENCODERS[pre_tokenizer]


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=80),
       pre_tokenizer=st.sampled_from(PRE_TOKENIZERS))
def test_random_text_encodes_the_same_in_llmlab_hf_and_tiktoken(tmp_path_factory, text, pre_tokenizer):
    """Any text without lone surrogates (they have no UTF-8); specials in it are text for all three."""
    tok, hf, enc = _three(pre_tokenizer, tmp_path_factory)
    ids = tok.encode(text)
    assert enc.encode_ordinary(text) == ids
    if EOT not in text and "<|pad|>" not in text:  # HF always matches added tokens
        assert hf.encode(text, add_special_tokens=False).ids == ids
