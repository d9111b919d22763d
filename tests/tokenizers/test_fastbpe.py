"""The C encoder (_fastbpe.c, fastbpe.py) against its oracles: the `regex` module for every split
pattern it scans itself, bpe.py's Python path for the ids, and tiktoken for both.

The scanner is checked three ways per pattern: random strings over an alphabet that holds a few code
points of every Unicode class combination the table distinguishes plus the characters the patterns
name (quote, slash, CR, LF, the contraction letters in both cases and U+017F, which (?i:s) matches);
every code point of planes 0-2 and 14 in a few contexts; and hand-worked cases.
"""

from __future__ import annotations

import functools
import pickle
import random

import pytest
import regex

from llmlab.errors import UserError
from llmlab.tokenizers import fastbpe
from llmlab.tokenizers import pre_tokenizers as pt
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.bpe_train import train_bpe

_fastbpe = pytest.importorskip("llmlab.tokenizers._fastbpe", reason="the C encoder is not built")

PATTERNS = list(fastbpe.SPECS)
NAMES = {pt.GPT2: "gpt2", pt.R50K_BASE: "r50k", pt.CL100K: "cl100k/llama3", pt.CL100K_BASE: "cl100k_base",
         pt.O200K_BASE: "o200k", pt.TEKKEN: "tekken", pt.QWEN2: "qwen2", pt.DIGITS: "digits", pt.WORDS: "words",
         pt.WHITESPACE: "whitespace"}


@pytest.fixture(scope="module", autouse=True)
def tables() -> None:
    _fastbpe.set_tables(*fastbpe.unicode_tables())


def c_split(text: str, pattern: str) -> list[tuple[int, int]]:
    return _fastbpe.split(text, fastbpe.SPECS[pattern])


def regex_split(text: str, pattern: str) -> list[tuple[int, int]]:
    return [m.span() for m in regex.finditer(pattern, text)]


def alphabet() -> list[str]:
    """Three code points of each class byte value in the table, and the characters patterns name."""
    table, _ = fastbpe.unicode_tables()
    rng = random.Random(0)
    by_class: dict[int, list[int]] = {}
    for cp in range(0x110000):
        if not 0xD800 <= cp <= 0xDFFF:
            by_class.setdefault(table[cp], []).append(cp)
    chars = [chr(c) for cps in by_class.values() for c in rng.sample(cps, min(3, len(cps)))]
    named = " \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000'/strevmldSTREVMLDſ0159²ⅫAaǅʰ中\u0301\u0903!.-_"
    return chars + list(named) * 4  # the named ones more often: the patterns turn on them


ALPHABET = alphabet()


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(ALPHABET, k=rng.randint(1, 24))) for _ in range(n)]


@pytest.mark.parametrize("pattern", PATTERNS, ids=NAMES.get)
def test_the_scanner_splits_random_text_like_regex(pattern: str) -> None:
    for text in random_texts(3000, seed=hash(NAMES[pattern]) % 1000):
        assert c_split(text, pattern) == regex_split(text, pattern), (NAMES[pattern], text)


def sweep_text(first: int, last: int) -> str:
    """Each code point in the range alone, doubled, after a space, a letter and a digit, before a quote
    contraction and a newline: the contexts where a class decides a split."""
    parts = []
    for cp in range(first, last):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        parts.append(f"{c}{c} {c}a{c}1{c}'s{c}\n")
    return "".join(parts)


@pytest.mark.parametrize("pattern", PATTERNS, ids=NAMES.get)
@pytest.mark.parametrize("plane", [(0, 0x10000), (0x10000, 0x30000), (0xE0000, 0xE1000)],
                         ids=["plane0", "planes1-2", "plane14"])
def test_the_code_point_sweep_splits_like_regex(pattern: str, plane: tuple[int, int]) -> None:
    text = sweep_text(*plane)
    ours, theirs = c_split(text, pattern), regex_split(text, pattern)
    if ours != theirs:
        first = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b)
        start = max(0, theirs[first][0] - 10)
        pytest.fail(f"{NAMES[pattern]}: first difference near {text[start:theirs[first][1] + 10]!r}: "
                    f"ours {ours[first]}, regex {theirs[first]}")


@pytest.mark.parametrize(("pattern", "text", "chunks"), [
    (pt.CL100K_BASE, "I'M  \n\n x", ["I", "'M", "  \n\n", " x"]),  # \s*[\r\n]: up to the last newline
    (pt.CL100K_BASE, "a  ", ["a", "  "]),  # \s++$ takes a final run whole
    (pt.R50K_BASE, "a   b", ["a", "  ", " b"]),  # \s+(?!\S) leaves the last space to the word
    (pt.R50K_BASE, "a \tb", ["a", " ", "\t", "b"]),  # a run of one before a letter: \s alone
    (pt.O200K_BASE, "HTMLParser's", ["HTMLParser's"]),  # [UP]*[LO]+ backs off to leave "P" to "arser"
    (pt.O200K_BASE, "ABC", ["ABC"]),  # no lower-case letter: [UP]+[LO]*
    (pt.O200K_BASE, "a//\n/b", ["a", "//\n/", "b"]),
    (pt.CL100K, "'ſ", ["'ſ"]),  # (?i:'s) matches the long s
    (pt.CL100K, "1234567", ["123", "456", "7"]),
    (pt.GPT2, " 1234 ab", [" 1234", " ab"]),
    (pt.WHITESPACE, " a b  ", [" ", "a", " ", "b", "  "]),
])
def test_hand_worked_splits(pattern: str, text: str, chunks: list[str]) -> None:
    assert regex.findall(pattern, text) == chunks  # the case is worked right
    assert [text[s:e] for s, e in c_split(text, pattern)] == chunks


# ---------------------------------------------------------------------------- the ids


CORPUS = ("The quick brown fox's 12,345 jumps; ПРИВЕТ мир! 日本語のテキスト. def f(x):\n\treturn x ** 2\n\n"
          "HTMLParser parses <b>bold</b> — naïve café 🎉🎉 ' '' ''' it's IT'S ſ\r\n") * 30


@functools.cache
def merges() -> list[tuple[bytes, bytes]]:
    return train_bpe([CORPUS], vocab_size=400).merges


def tokenizer(pattern: str) -> BPETokenizer:
    return BPETokenizer.from_merges(merges(), pre_tokenizer=pt.PreTokenizer.from_pattern(pattern))


@pytest.mark.parametrize("pattern", [*PATTERNS, pt.SCRIPT], ids=lambda p: NAMES.get(p, "script (regex split)"))
def test_c_ids_equal_the_python_oracle(pattern: str) -> None:
    tok = tokenizer(pattern)
    texts = [CORPUS, *random_texts(500, seed=1), "a" * 10_000, " " * 5000 + "x", "\n" * 3000]
    for text in texts:
        assert tok.encode(text) == tok._encode_python(text)
    assert tok._engine is not None  # the C encoder ran


def test_ignore_merges_takes_a_chunk_that_is_a_token_whole() -> None:
    vocab = {bytes([b]): b for b in range(256)}
    merges = [(b"a", b"b"), (b"b", b"c")]
    vocab[b"ab"], vocab[b"bc"], vocab[b"abc"] = 256, 257, 258  # "abc": a token no merge makes
    tok = BPETokenizer(vocab, merges, ignore_merges=True)
    plain = BPETokenizer(vocab, merges)
    assert tok.encode("abc abc") == [258, 32, 256, 99] == tok._encode_python("abc abc")  # " abc" is no token
    assert plain.encode("abc") == [256, 99] == plain._encode_python("abc")


def test_the_cache_limit_holds_and_ids_stay_right(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmlab.tokenizers import bpe

    monkeypatch.setattr(bpe, "_CACHE_LIMIT", 5)
    tok = tokenizer(pt.GPT2)
    ids = tok.encode(CORPUS)
    assert 0 < tok.cached_chunks <= 5
    assert ids == tokenizer(pt.GPT2)._encode_python(CORPUS)


def test_a_lone_surrogate_is_the_same_user_error() -> None:
    tok = tokenizer(pt.GPT2)
    with pytest.raises(UserError, match="surrogate"):
        tok.encode("abc \ud800 x")
    with pytest.raises(UserError, match="lone surrogates have no UTF-8 form"):
        tok._encode_ordinary("abc \ud800 x")  # past encode's own check: the C path hands over to Python


def test_a_pickled_tokenizer_makes_its_own_engine() -> None:
    tok = tokenizer(pt.CL100K)
    ids = tok.encode(CORPUS)
    copy = pickle.loads(pickle.dumps(tok))
    assert copy._engine is None and copy.cached_chunks == 0
    assert copy.encode(CORPUS) == ids


def test_encode_batch_runs_in_kept_threads_each_with_its_own_cache() -> None:
    import gc

    tok = tokenizer(pt.GPT2)
    texts = [CORPUS[i:i + 300] for i in range(0, len(CORPUS), 300)]
    expect = [tok._encode_python(t) for t in texts]
    assert tok.encode_batch(texts, num_workers=2) == expect
    workers, pool = tok._pool
    threads = set(pool._threads)
    assert workers == 2 and 1 <= len(threads) <= 2
    assert tok.encode_batch(texts[::-1], num_workers=2) == expect[::-1]
    assert tok._pool[1] is pool and set(pool._threads) == threads  # the same threads, kept
    local, first = tok._local, tok._engine
    engines = {id(e): e for e in (pool.submit(lambda: getattr(local, "engine", None)).result() for _ in range(6))
               if e is not None}  # a thread that drew no slice has none
    assert engines and all(e is not first and e.cache_len > 0 for e in engines.values())  # warm forks of the first
    tok.encode_batch(texts, num_workers=3)  # another count: another pool
    assert tok._pool[1] is not pool
    pool = tok._pool[1]
    del tok
    gc.collect()
    assert pool._shutdown


def test_pure_python_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLAB_PURE_PYTHON", "1")
    tok = tokenizer(pt.O200K_BASE)
    ids = tok.encode(CORPUS)
    assert tok._engine is None
    monkeypatch.delenv("LLMLAB_PURE_PYTHON")
    assert tokenizer(pt.O200K_BASE).encode(CORPUS) == ids


@pytest.mark.parametrize("pattern", [pt.GPT2, pt.CL100K_BASE, pt.O200K_BASE], ids=NAMES.get)
def test_c_ids_equal_tiktoken(pattern: str) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    tok = tokenizer(pattern)
    ref = tiktoken.Encoding("t", pat_str=pattern, mergeable_ranks=dict(tok.vocab), special_tokens={})
    for text in [CORPUS, *random_texts(300, seed=2)]:
        assert tok.encode(text) == ref.encode_ordinary(text)


def test_the_tables_rebuild_when_the_cached_file_is_damaged(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    table, folds = fastbpe.unicode_tables()  # built, then written
    (cached,) = (tmp_path / "llmlab").iterdir()
    cached.write_bytes(cached.read_bytes()[:1000])  # a truncated file
    assert fastbpe.unicode_tables() == (table, folds)
    assert table[ord("a")] & 1 and table[ord("1")] & 2 and table[ord(" ")] & 4 and table[0x301] & 8
    assert folds[0] == [ord("S"), ord("s"), 0x17F]


def test_merge_splits_equal_the_python_bpe_of_each_token() -> None:
    """The C `merge_splits` against tiktoken_file.bpe_parts on a trained vocabulary and a hand case where
    the lower ranks split a token into three parts (not a rank file)."""
    from llmlab.tokenizers.tiktoken_file import bpe_parts

    ranks = tokenizer(pt.GPT2).vocab
    splits = _fastbpe.merge_splits(ranks)
    assert set(splits) == {t for t in ranks if len(t) > 1}
    for token, k in splits.items():
        parts = bpe_parts(token, ranks, max_rank=ranks[token])
        assert (parts == [token[:k], token[k:]]) if k > 0 else len(parts) == -k
    bad = {bytes([b]): b for b in range(256)} | {b"abc": 256}
    assert _fastbpe.merge_splits(bad) == {b"abc": -3}


def test_long_chunks_merge_as_the_oracle_does() -> None:
    """Chunks past 64 bytes take the heap path (O(n log n)); it must give the pass-by-pass loop's ids, also
    for overlapping pairs ("aaaa") and for merges listed before the merges that make their parts."""
    rng = random.Random(3)
    trained = tokenizer(pt.GPT2)
    words = ["".join(rng.choices("aab", k=rng.randint(65, 400))) for _ in range(40)]
    words += ["a" * n for n in (65, 66, 67, 200, 1001)] + ["".join(rng.choices("thequick", k=3000))]
    for word in words:
        assert trained.encode(word) == trained._encode_python(word)
    for _ in range(30):  # random merge lists over a tiny alphabet, in any order
        tokens = [b"a", b"b"]
        merges = []
        for _ in range(rng.randint(3, 25)):
            a, b = rng.choice(tokens), rng.choice(tokens)
            if a + b not in tokens:
                tokens.append(a + b)
                merges.append((a, b))
        rng.shuffle(merges)
        tok = BPETokenizer.from_merges(merges)
        for word in words[:10]:
            assert tok.encode(word) == tok._encode_python(word), (merges, word)


def test_threads_that_share_a_tokenizer_each_get_the_right_ids() -> None:
    """Four threads calling encode on one tokenizer at once (each gets a fork of the engine, with the GIL
    let go while it encodes) give the ids one thread gives."""
    from concurrent.futures import ThreadPoolExecutor

    tok = tokenizer(pt.O200K_BASE)
    texts = random_texts(400, seed=5) + [CORPUS[i:i + 700] for i in range(0, len(CORPUS), 700)]
    expect = [tok._encode_python(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(tok.encode, texts)) == expect
