"""Encoding and decoding with byte-level BPE: hand-worked merges, round trips, streaming,
special-token safety, the chunk cache, and parity with tiktoken and HF `tokenizers`
(both built in the test from the same merges, so they are independent encoders).
"""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmlab.tokenizers.bpe as bpe_module
from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.errors import UserError
from llmlab.tokenizers.base import SpecialTokenError
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.bytelevel import to_chars
from llmlab.tokenizers.pre_tokenizers import PATTERNS

EOT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM = "<|im"  # a special that is a prefix of another: the longer must win
SPECIALS = (EOT, IM_START, IM)

MULTILINGUAL = [
    "The quick brown fox jumps over the lazy dog. It's 2024, isn't it?",
    "Größere Straßen führen nach München; die Bäume blühen früh.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "東京は日本の首都です。今日はいい天気ですね。",
    "emoji 🙂🙂 and 👍🏽, café, naïve, e\u0301",
    "def f(x):\n    return x ** 2  # square\n",
]

HARD = [
    "",
    " ",
    "hello world",
    "👨‍👩‍👧‍👦 family (ZWJ sequence), 👍🏽 skin tone, 🇩🇪🇯🇵🇺🇳 flags, 🏳️‍🌈",
    "日本語の文章と中文和한국어",
    "e\u0301 a\u0308 o\u0302\u0323 Z\u0351\u0352\u0353 combining marks",
    "windows\r\nline\r\n\r\nends\r",
    "nul\x00byte\x00\x00",
    "\ttabs\t\tand\t \t mixed\x0b\x0c",
    "a" * 10_000,
    "nbsp\u00a0\u00a0here and\u3000ideographic",
    "שלום עולם — مرحبا بالعالم (RTL) \u200f\u202e",
    "zero\u200bwidth\ufeffBOM",
    "\U0010ffff private use \ue000 and \U0001d11e",
    "   leading and trailing   ",
    "\n\n\n",
]


@cache
def trained() -> BPETokenizer:
    docs = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=50_000))) + MULTILINGUAL * 5
    return train_bpe(docs, vocab_size=1200, special_tokens=SPECIALS)


@cache
def ascii_trained() -> BPETokenizer:
    """Merges only ASCII: every multibyte character stays split into its bytes."""
    return train_bpe(["hello world, the cat sat on the mat. " * 20], vocab_size=280)


def hand_tokenizer() -> BPETokenizer:
    return BPETokenizer.from_merges([(b"h", b"e"), (b"l", b"l"), (b"he", b"ll")])


# ---------------------------------------------------------------------------- by hand


def test_hello_by_hand() -> None:
    """merges: (h,e) -> he = 256, (l,l) -> ll = 257, (he,ll) -> hell = 258

    "hello":   h e l l o -> he l l o -> he ll o -> hell o              = [258, 111]
    " hello":  " " is a byte of the chunk " hello": " " hell o          = [32, 258, 111]
    "hellohe": h e l l o h e -> (h,e) everywhere: he l l o he
               -> he ll o he -> hell o he                            = [258, 111, 256]
    "lll":     (l,l) left to right: ll l                              = [257, 108]
    """
    tok = hand_tokenizer()
    assert tok.encode("hello") == [258, 111]
    assert tok.encode("hello hello") == [258, 111, 32, 258, 111]
    assert tok.encode("hellohe") == [258, 111, 256]
    assert tok.encode("lll") == [257, ord("l")]
    assert tok.decode([258, 111]) == "hello"
    assert [tok.id_to_token(i) for i in tok.encode("hello")] == [b"hell", b"o"]


def test_rank_decides_not_position() -> None:
    """merges: (e,l) rank 0, (h,e) rank 1.

    "hel": pairs (h,e) rank 1, (e,l) rank 0 -> the lowest rank first: h el; then (h,el)
    has no merge: [h, el]. Merging left to right instead would give [he, l].
    """
    tok = BPETokenizer.from_merges([(b"e", b"l"), (b"h", b"e")])
    assert tok.encode("hel") == [ord("h"), 256]
    assert tok.encode("he") == [257]


def test_chunks_are_encoded_apart() -> None:
    """gpt2 splits "aa aa" into "aa" | " aa"; the merge (a, " ") never applies across chunks."""
    tok = BPETokenizer.from_merges([(b"a", b" "), (b"a", b"a")])
    assert tok.encode("aa aa") == [257, 32, 257]


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("text", HARD, ids=range(len(HARD)))
def test_round_trip_hard_strings(text: str) -> None:
    tok = trained()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert all(0 <= i < tok.vocab_size - len(SPECIALS) for i in ids)


def test_long_run_is_merged() -> None:
    """"a" * 10_000 is one chunk; with (a,a) and (aa,aa) merges it takes 10_000 / 4 tokens."""
    tok = BPETokenizer.from_merges([(b"a", b"a"), (b"aa", b"aa")])
    assert tok.encode("a" * 10_000) == [257] * 2_500
    assert tok.encode("a" * 10_001) == [257] * 2_500 + [ord("a")]


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_round_trip_random(text: str) -> None:
    tok = trained()
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


def test_lone_surrogate_is_a_user_error() -> None:
    with pytest.raises(UserError, match="lone surrogates have no UTF-8 form"):
        trained().encode("ab \ud800 cd")
    with pytest.raises(UserError, match="lone surrogates"):
        trained().encode(f"x{EOT}\udfff", allowed_special="all")


# ---------------------------------------------------------------------------- decoding


def test_decode_partial_utf8_gives_replacement_character() -> None:
    """"日" is E6 97 A5; in the tiktoken layout byte b is id b."""
    tok = hand_tokenizer()
    assert tok.decode([0xE6, 0x97, 0xA5]) == "日"
    assert tok.decode([0xE6, 0x97]) == "\ufffd"
    assert tok.decode([ord("a"), 0xE6]) == "a\ufffd"
    assert tok.decode([0xFF, ord("b")]) == "\ufffdb"
    assert tok.decode_bytes([0xE6, 0x97]) == b"\xe6\x97"
    with pytest.raises(UnicodeDecodeError):
        tok.decode([0xE6], errors="strict")


def test_decode_unknown_id_is_a_user_error() -> None:
    tok = hand_tokenizer()
    with pytest.raises(UserError, match=r"token id 259 is not in the vocabulary \(size 259\)"):
        tok.decode([259])


def test_stream_decoder_waits_for_complete_characters() -> None:
    """With ASCII-only merges, é is 2 ids, 日 and 本 3 each, 🙂 4: text comes out only
    when a character's last byte arrives."""
    tok = ascii_trained()
    text = "é日本🙂"
    ids = tok.encode(text)
    assert len(ids) == 2 + 3 + 3 + 4
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids]
    assert pieces == ["", "é", "", "", "日", "", "", "本", "", "", "", "🙂"]
    assert dec.flush() == ""
    assert "".join(pieces) == text
    assert list(tok.stream_decoder()(ids)) == ["é", "日", "本", "🙂"]


def test_stream_decoder_flushes_an_incomplete_character() -> None:
    tok = ascii_trained()
    dec = tok.stream_decoder()
    assert [dec.push(i) for i in tok.encode("a🙂")[:3]] == ["a", "", ""]
    assert dec.flush() == "\ufffd"
    assert list(tok.stream_decoder()([ord("a"), 0xF0, 0x9F])) == ["a", "\ufffd"]


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_stream_decoder_random(text: str) -> None:
    """Tokens may hold parts of characters (merges across UTF-8 bytes); streaming still
    gives the text, and never a U+FFFD that the text does not have."""
    tok = trained()
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in tok.encode(text)]
    assert "".join(pieces) + dec.flush() == text
    assert "".join(tok.stream_decoder()(tok.encode(text))) == text


# ---------------------------------------------------------------------------- special tokens


def test_special_text_is_ordinary_text_by_default() -> None:
    tok = trained()
    first_special = tok.special_tokens[EOT]
    assert first_special == 1200 - 3
    text = f"hello {EOT} world {IM_START}"
    ids = tok.encode(text)
    assert all(i < first_special for i in ids)
    assert tok.decode(ids) == text
    assert tok.encode(text, disallowed_special="text") == ids


def test_allowed_special_gives_the_special_id() -> None:
    tok = trained()
    ids = tok.encode(f"hello {EOT} world", allowed_special={EOT})
    assert ids == [*tok.encode("hello "), tok.special_tokens[EOT], *tok.encode(" world")]
    assert tok.decode(ids) == f"hello {EOT} world"
    # only the allowed one: the other stays text
    ids = tok.encode(f"{EOT}{IM_START}", allowed_special={EOT})
    assert ids[0] == tok.special_tokens[EOT]
    assert tok.special_tokens[IM_START] not in ids
    assert tok.decode(ids[1:]) == IM_START


def test_allowed_special_all() -> None:
    tok = trained()
    ids = tok.encode(f"{EOT}a{IM_START}{EOT}", allowed_special="all")
    assert ids == [tok.special_tokens[EOT], ord("a"), tok.special_tokens[IM_START], tok.special_tokens[EOT]]


def test_longest_special_wins() -> None:
    """"<|im_start|>" and its prefix "<|im" are both specials: at one position, the longer
    one is taken; "<|im_end|>" holds only the shorter one."""
    tok = trained()
    assert tok.encode(IM_START, allowed_special="all") == [tok.special_tokens[IM_START]]
    ids = tok.encode("<|im_end|>", allowed_special="all")
    assert ids[0] == tok.special_tokens[IM]
    assert tok.decode(ids[1:]) == "_end|>"
    assert tok.encode(IM_START, allowed_special={IM}) == [tok.special_tokens[IM], *tok.encode("_start|>")]


def test_disallowed_special_raise_names_token_and_position() -> None:
    tok = trained()
    with pytest.raises(SpecialTokenError, match=r"special token '<\|endoftext\|>' at character 6"):
        tok.encode(f"hello {EOT}", disallowed_special="raise")
    with pytest.raises(SpecialTokenError, match=r"'<\|im_start\|>' at character 13"):
        tok.encode(f"{EOT}{IM_START}", allowed_special={EOT, IM}, disallowed_special="raise")
    # nothing disallowed in the text: encodes as usual
    assert tok.encode("plain", disallowed_special="raise") == tok.encode("plain")
    assert tok.encode(EOT, allowed_special="all", disallowed_special="raise") == [tok.special_tokens[EOT]]
    assert issubclass(SpecialTokenError, UserError)


def test_allowed_but_not_a_special_is_an_error() -> None:
    with pytest.raises(SpecialTokenError, match=r"not special tokens of this tokenizer: <\|foo\|>"):
        trained().encode("x", allowed_special={"<|foo|>", EOT})


def test_unknown_disallowed_special_value_is_an_error() -> None:
    with pytest.raises(UserError):
        trained().encode(f"x {EOT}", disallowed_special="all")  # type: ignore[arg-type]


def test_special_tokens_must_be_valid() -> None:
    vocab = {bytes([b]): b for b in range(256)}
    with pytest.raises(UserError, match="a special token is the empty string"):
        BPETokenizer(vocab, [], special_tokens={"": 256})
    with pytest.raises(UserError, match="two tokens share one id"):
        BPETokenizer(vocab, [], special_tokens={EOT: 65})
    with pytest.raises(UserError, match="needs all 256 bytes"):
        BPETokenizer({b"a": 0}, [])
    with pytest.raises(UserError, match="is not in the vocabulary"):
        BPETokenizer(vocab, [(b"a", b"b")])


# ---------------------------------------------------------------------------- the chunk cache


def test_cache_gives_the_same_ids_as_a_fresh_tokenizer() -> None:
    tok = trained()
    text = " ".join(MULTILINGUAL * 3) + " hello hello hello"
    warm = tok.encode(text)
    assert tok.encode(text) == warm  # now from the cache
    assert tok.cached_chunks  # it was used
    tok.clear_cache()
    assert tok.cached_chunks == 0
    assert tok.encode(text) == warm
    fresh = BPETokenizer.from_merges(tok.merges, special_tokens=SPECIALS)
    assert fresh.encode(text) == warm


def test_cached_ids_are_not_shared_with_the_caller() -> None:
    tok = hand_tokenizer()
    ids = tok.encode("hello")
    ids.append(999)
    assert tok.encode("hello") == [258, 111]


def test_cache_limit_clears_and_stays_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bpe_module, "_CACHE_LIMIT", 3)
    tok = BPETokenizer.from_merges(trained().merges)
    text = " ".join(MULTILINGUAL)
    ids = tok.encode(text)
    assert 0 < tok.cached_chunks <= 3
    assert ids == BPETokenizer.from_merges(trained().merges).encode(text) == trained().encode(text)


# ---------------------------------------------------------------------------- batches


TEXTS = [*MULTILINGUAL, *HARD[:8], f"a {EOT} b"]


def test_encode_batch_sequential_equals_encode() -> None:
    tok = trained()
    assert tok.encode_batch(TEXTS, num_workers=1) == [tok.encode(t) for t in TEXTS]
    assert tok.encode_batch(TEXTS, num_workers=1, allowed_special="all") == [
        tok.encode(t, allowed_special="all") for t in TEXTS]
    # fewer texts than 2 per worker: done in this process
    assert tok.encode_batch(TEXTS[:3], num_workers=2) == [tok.encode(t) for t in TEXTS[:3]]


def test_encode_batch_two_workers_equals_encode() -> None:
    tok = trained()
    assert tok.encode_batch(TEXTS, num_workers=2) == [tok.encode(t) for t in TEXTS]
    assert tok.encode_batch(TEXTS, num_workers=2, allowed_special="all") == [
        tok.encode(t, allowed_special="all") for t in TEXTS]


def _worker_state() -> tuple[int, int]:
    """(pid, chunks in the cache) of the encode_batch worker this runs in."""
    import os

    from llmlab.tokenizers import base

    tok = base._WORKER_TOKENIZER
    return os.getpid(), tok.cached_chunks


def test_encode_batch_keeps_one_warm_pool_per_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers start once, keep their chunk caches between calls, and go with the tokenizer.

    Processes are the pure-Python path's (the C encoder uses threads: test_fastbpe.py)."""
    import gc

    from llmlab.tokenizers import base

    monkeypatch.setenv("LLMLAB_PURE_PYTHON", "1")
    tok = BPETokenizer.from_merges(trained().merges, special_tokens=SPECIALS)
    first = tok.encode_batch(TEXTS, num_workers=2)
    workers, pool = base._POOLS[id(tok)]
    processes = set(pool._processes)
    before = dict(pool.submit(_worker_state).result() for _ in range(8))  # pid -> chunks cached
    assert workers == 2 and 1 <= len(processes) <= 2 and sum(before.values()) > 0  # warm after one call
    assert tok.encode_batch(TEXTS[::-1], num_workers=2) == [tok.encode(t) for t in TEXTS[::-1]]
    assert base._POOLS[id(tok)][1] is pool and first == [tok.encode(t) for t in TEXTS]
    after = dict(pool.submit(_worker_state).result() for _ in range(8))
    assert processes <= set(pool._processes)  # the same processes (none replaced), and their caches kept
    assert all(after[pid] >= before[pid] for pid in set(before) & set(after))
    tok.encode_batch(TEXTS, num_workers=3)  # another worker count: another pool
    assert base._POOLS[id(tok)][1] is not pool and pool._shutdown_thread
    key, pool = id(tok), base._POOLS[id(tok)][1]
    del tok
    gc.collect()
    assert key not in base._POOLS and pool._shutdown_thread


def test_a_program_that_used_the_pool_exits_promptly(tmp_path) -> None:
    import subprocess
    import sys

    code = ("from llmlab.tokenizers.bpe import BPETokenizer\n"
            "tok = BPETokenizer.from_merges([(b'a', b'b')])\n"
            "print(tok.encode_batch(['ab'] * 10, num_workers=2)[0])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[256]"


# ---------------------------------------------------------------------------- vocabulary


def test_vocabulary_is_consistent() -> None:
    """tiktoken layout: ids 0..255 are bytes, 256 + r is merge r, specials last."""
    tok = trained()
    n_merges = len(tok.merges)
    assert tok.vocab_size == 256 + n_merges + len(SPECIALS) == 1200
    for i in range(tok.vocab_size):
        token = tok.id_to_token(i)
        assert tok.token_to_id(token) == i
        if i < 256:
            assert token == bytes([i])
            assert tok.merge_rank(i) is None
        elif i < 256 + n_merges:
            a, b = tok.merges[i - 256]
            assert token == a + b
            assert tok.merge_rank(i) == i - 256
        else:
            assert token == SPECIALS[i - 256 - n_merges]
            assert tok.merge_rank(i) is None
    assert tok.token_to_id(b"\x00") == 0
    assert tok.token_to_id("é") == tok.token_to_id("é".encode())
    assert tok.token_to_id("definitely not a token") is None
    with pytest.raises(UserError, match="not in the vocabulary"):
        tok.id_to_token(tok.vocab_size)


# ---------------------------------------------------------------------------- parity


@cache
def tiktoken_encoding():  # -> tiktoken.Encoding (an optional import)
    tiktoken = pytest.importorskip("tiktoken")
    tok = trained()
    ranks = {bytes([b]): b for b in range(256)}
    for a, b in tok.merges:
        ranks[a + b] = len(ranks)
    return tiktoken.Encoding("test", pat_str=PATTERNS["gpt2"], mergeable_ranks=ranks,
                             special_tokens=dict(tok.special_tokens))


@cache
def hf_tokenizer():  # -> tokenizers.Tokenizer (an optional import)
    hf = pytest.importorskip("tokenizers")
    tok = trained()
    model = hf.models.BPE(vocab={to_chars(b): i for b, i in tok.vocab.items()},
                          merges=[(to_chars(a), to_chars(b)) for a, b in tok.merges])
    out = hf.Tokenizer(model)
    out.pre_tokenizer = hf.pre_tokenizers.Sequence([
        hf.pre_tokenizers.Split(hf.Regex(PATTERNS["gpt2"]), behavior="isolated"),
        hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return out


@pytest.mark.parametrize("text", [*HARD, *MULTILINGUAL], ids=range(len(HARD) + len(MULTILINGUAL)))
def test_encode_matches_tiktoken_and_hf(text: str) -> None:
    ids = trained().encode(text)
    assert ids == tiktoken_encoding().encode_ordinary(text)
    assert ids == hf_tokenizer().encode(text).ids


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=100)
       | st.lists(st.sampled_from([*MULTILINGUAL, " ", "\n", "ab", "12345", EOT])).map("".join))
def test_encode_matches_tiktoken_and_hf_random(text: str) -> None:
    tok = trained()
    ids = tok.encode(text)
    assert ids == tiktoken_encoding().encode_ordinary(text)
    assert ids == hf_tokenizer().encode(text).ids
    assert tok.encode(text, allowed_special="all") == tiktoken_encoding().encode(text, allowed_special="all")
