"""The C word search (_fastunigram.c, fastunigram.py) against its oracle, unigram.py's Python path;
and its SentencePiece BPE merges by score (`ScoreBPE`) against sp_bpe.py's.

Three levels: the search of one word (`best_path` == unigram_lattice.text_stable_path, path and
float32 limit bit for bit; `viterbi_float32` == the lattice's float32 Viterbi from any running
total, the total bit for bit), then whole tokenizers (a C-built one against a twin made with
LLMLAB_PURE_PYTHON=1) on seeded random text over a mixed alphabet (1- to 4-byte UTF-8, unknown
characters, runs of spaces), in SentencePiece's float32 mode and HF's float64 mode: the same ids
cold and warm, and the same cache entries (the C path fills the tokenizer's own caches); and real
models trained by sentencepiece on the parity strings and a sample of the code-point sweep.
Vocabulary scores come from a coarse set, so exact and near ties abound.
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable
from functools import cache

import pytest

from llmlab.errors import UserError
from llmlab.tokenizers import sp_reference as ref
from llmlab.tokenizers import unigram
from llmlab.tokenizers.hf_io import from_hf_json
from llmlab.tokenizers.sp_bpe import SentencePieceBPE
from llmlab.tokenizers.sp_text import SPACE, SentencePieceNormalizer
from llmlab.tokenizers.unigram import UnigramTokenizer
from llmlab.tokenizers.unigram_io import load_sentencepiece_model
from llmlab.tokenizers.unigram_lattice import build_lattice, piece_prefixes, text_stable_path, viterbi_float32

pytest.importorskip("llmlab.tokenizers._fastunigram", reason="the C word search is not built")

ALPHABET = "ab" + SPACE + "é日😀"  # what pieces are made of: 1, 3, 2, 3 and 4 UTF-8 bytes
TEXT_ALPHABET = "ab é日😀x\u0301"  # "x" and U+0301 are in no piece: unknown characters
SCORES = [-0.5, -1.0, -1.5, -2.25, -3.0, -2.0 - 2**-10]


def random_pieces(rng: random.Random, n: int, alphabet: str = ALPHABET) -> dict[str, float]:
    pieces = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))): rng.choice(SCORES) for _ in range(n)}
    for c in ALPHABET[:4]:  # most characters have a piece of their own; "😀" sometimes not
        pieces.setdefault(c, -8.0)
    return pieces


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(TEXT_ALPHABET) for _ in range(n))


def make(pieces: dict[str, float], *, float32: bool, byte_fallback: bool, python: bool,
         monkeypatch: pytest.MonkeyPatch) -> UnigramTokenizer:
    """A tokenizer as .model files load (float32, SentencePiece's whitespace) or as HF files do
    (float64); `python`: the oracle, made with LLMLAB_PURE_PYTHON=1 when its engine is decided."""
    byte_pieces = [(f"<0x{b:02X}>", 0.0) for b in range(256)] if byte_fallback else []
    normalizer = SentencePieceNormalizer(None, add_dummy_prefix=True, remove_extra_whitespaces=False) if float32 else None
    tok = UnigramTokenizer([("<unk>", 0.0), *byte_pieces, *pieces.items()], normalizer="none", float32=float32,
                           byte_fallback=byte_fallback, text_normalizer=normalizer)
    with monkeypatch.context() as m:
        m.setenv("LLMLAB_PURE_PYTHON", "1" if python else "0")
        assert (tok._engine_here() is None) == python
    return tok


def assert_same_caches(c: UnigramTokenizer, py: UnigramTokenizer) -> None:
    """The caches the two paths fill are equal; WordPaths without their lattice (the C path leaves it to
    be rebuilt), and their `spent` (sum |score|) to 1e-12: Python 3.12's sum() compensates its rounding,
    C adds plainly (either bounds the same sum; the limits, which decide, are compared bit for bit)."""
    assert (c._cache, c._safe, c._safe_spaced) == (py._cache, py._safe, py._safe_spaced)
    assert c._paths.keys() == py._paths.keys()
    for word, p in py._paths.items():
        q = c._paths[word]
        assert (q.ids, q.scores, q.growth, q.limit) == (p.ids, p.scores, p.growth, p.limit), word
        assert math.isclose(q.spent, p.spent, rel_tol=1e-12), word


def test_best_path_equals_text_stable_path_bit_for_bit():
    """Path and limit of the one-pass search, random vocabularies and words (ties, unknown characters,
    prefixes that are no piece, astral characters); exact ties give limit <= 0 on both sides."""
    rng = random.Random(5)
    ties = 0
    for case in range(400):
        pieces = random_pieces(rng, rng.randint(1, 14), ALPHABET if case % 2 else "ab")  # "ab": many ties
        tok = make(pieces, float32=True, byte_fallback=False, python=False, monkeypatch=pytest.MonkeyPatch())
        word = random_text(rng, rng.randint(0, 30)).replace(" ", SPACE) if case % 2 else "".join(
            rng.choice("aab") for _ in range(rng.randint(0, 30)))
        expected = text_stable_path(word, tok._prefixes, max_len=tok.max_len, unk_score=tok.unk_score)
        path, limit = tok._engine.best_path(word)
        assert path == [tuple(e) for e in expected[0]], word
        assert limit == expected[1] or (limit != limit and expected[1] != expected[1]), word
        ties += limit <= 0
    assert ties > 20  # the coarse scores make exact ties common: the limit's sign is tested too


def test_viterbi_float32_equals_the_lattice_oracle():
    """From running totals up to 2^26 (float32 spacing 8 there): the same path, the same float32 total."""
    rng = random.Random(6)
    for _ in range(300):
        pieces = random_pieces(rng, rng.randint(1, 14))
        tok = make(pieces, float32=True, byte_fallback=False, python=False, monkeypatch=pytest.MonkeyPatch())
        word = random_text(rng, rng.randint(0, 25)).replace(" ", SPACE)
        start = unigram.to_float32(-rng.choice([0.0, 1.0, 2.0**12, 2.0**20, 2.0**26]) * rng.random())
        lattice = build_lattice(word, piece_prefixes(tok.vocab), max_len=tok.max_len, unk_score=tok.unk_score,
                                prefix_closed=True)
        edges, total = viterbi_float32(lattice, start=start)
        assert tok._engine.viterbi_float32(word, start) == ([tuple(e) for e in edges], total), (word, start)


@pytest.mark.parametrize("float32", [True, False], ids=["float32", "float64"])
@pytest.mark.parametrize("byte_fallback", [False, True], ids=["unk", "byte_fallback"])
def test_c_path_equals_python_path_on_random_text(float32, byte_fallback, monkeypatch):
    """Random vocabularies, texts of random words (repeated, so caches are hit) with "z" words whose
    scores push the float32 total to millions (cached paths past their limit are walked again)."""
    rng = random.Random(7 + 2 * float32 + byte_fallback)
    for case in range(30):
        pieces = random_pieces(rng, rng.randint(4, 24))
        pieces[SPACE + "z"] = -rng.choice([2.0**10, 2.0**16, 2.0**21])
        c, py = (make(pieces, float32=float32, byte_fallback=byte_fallback, python=p, monkeypatch=monkeypatch)
                 for p in (False, True))
        words = [random_text(rng, rng.randint(1, 7)) for _ in range(10)] + ["z", "z"]
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 200))) for _ in range(8)]
        texts += [" " * rng.randint(1, 3) + t + "  " for t in texts[:3]] + [random_text(rng, 60) for _ in range(4)]
        expected = [py.encode(t) for t in texts]
        assert [c.encode(t) for t in texts] == expected, case  # cold, then warming as it goes
        assert [c.encode(t) for t in reversed(texts)] == expected[::-1], case  # warm
        assert_same_caches(c, py)


def test_cache_limit_clears_all_caches(monkeypatch):
    """A cache that reaches the limit is emptied (with the safe-word caches), as in the Python path."""
    monkeypatch.setattr(unigram, "_CACHE_LIMIT", 3)
    pieces = {"▁a": -1.0, "▁b": -1.5, "a": -2.0, "b": -2.0, "▁": -3.0}
    c, py = (make(pieces, float32=True, byte_fallback=False, python=p, monkeypatch=monkeypatch) for p in (False, True))
    for text in ["a b ab ba", "aa bb", "a", "bab abab a b"]:
        assert c.encode(text) == py.encode(text)
        assert_same_caches(c, py)
        assert len(c._paths) <= 3


def test_copies_make_their_own_engine_and_surrogates_still_refused(monkeypatch):
    """A pickled tokenizer (encode_batch's workers) carries no C state and makes its own engine over its
    own caches; a lone surrogate is refused with the Python path's UserError."""
    pieces = {"▁a": -1.0, "a": -2.0, "▁": -3.0, "é": -2.5}
    tok = make(pieces, float32=True, byte_fallback=True, python=False, monkeypatch=monkeypatch)
    ids = tok.encode("a éa a")
    copy = pickle.loads(pickle.dumps(tok))
    assert copy._engine is None and copy._paths == {}
    assert copy.encode("a éa a") == ids and copy._engine is not None and copy._engine is not tok._engine
    with pytest.raises(UserError, match="surrogate"):
        tok.encode("a \ud800 a")


def test_threads_sharing_one_tokenizer_get_the_python_paths_ids(monkeypatch):
    """Four threads encode through one engine (a call made while another runs, after a thread switch in
    a garbage collection, is refused and takes the Python path): the ids of the serial Python path."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(9)
    pieces = random_pieces(rng, 30)
    c, py = (make(pieces, float32=True, byte_fallback=True, python=p, monkeypatch=monkeypatch) for p in (False, True))
    texts = [" ".join(random_text(rng, rng.randint(1, 6)) for _ in range(40)) for _ in range(400)]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(c.encode, texts)) == [py.encode(t) for t in texts]


def make_bpe(pieces: dict[str, float], *, unused: set[str], byte_fallback: bool, unk: bool, python: bool,
             monkeypatch: pytest.MonkeyPatch) -> SentencePieceBPE:
    """A SentencePiece BPE as .model files load (merges by score); `python`: the oracle."""
    names = ["<unk>", *(f"<0x{b:02X}>" for b in range(256) if byte_fallback), *pieces]
    scores = [0.0] * (len(names) - len(pieces)) + list(pieces.values())
    normalizer = SentencePieceNormalizer(None, add_dummy_prefix=True, remove_extra_whitespaces=False)
    tok = SentencePieceBPE(names, scores=scores, normalizer=normalizer, unk_id=0 if unk else None,
                           byte_fallback=byte_fallback, special_tokens={"<unk>": 0},
                           unused=[names.index(p) for p in unused], sentencepiece_decode=True)
    with monkeypatch.context() as m:
        m.setenv("LLMLAB_PURE_PYTHON", "1" if python else "0")
        assert (tok._engine_here() is None) == python
    return tok


@pytest.mark.parametrize("byte_fallback", [False, True], ids=["unk", "byte_fallback"])
def test_score_bpe_equals_sp_bpe_python_on_random_text(byte_fallback, monkeypatch):
    """Random pieces with coarse scores (ties go to the leftmost pair), some UNUSED (split back into the
    pair last pushed for them), pieces across "▁" in some cases (the text is then one word, uncached):
    the same ids as sp_bpe.py's merges, cold and warm, and the same word cache."""
    rng = random.Random(11 + byte_fallback)
    for case in range(40):
        pieces = {rng.choice(["", SPACE]) + "".join(rng.choice("abé日😀") for _ in range(rng.randint(1, 4))):
                  rng.choice([-1.0, -2.0, -3.0, -2.5]) for _ in range(rng.randint(4, 40))}
        for c in ALPHABET[:4]:
            pieces.setdefault(c, -9.0)
        if case % 3 == 0:  # one word per text: no cut is exact
            pieces[f"a{SPACE}b"] = -0.5
        unused = set(rng.sample(sorted(pieces), k=min(len(pieces), rng.randint(0, 4))))
        c, py = (make_bpe(pieces, unused=unused, byte_fallback=byte_fallback, unk=True, python=p,
                          monkeypatch=monkeypatch) for p in (False, True))
        assert c._split == (case % 3 != 0)
        words = [random_text(rng, rng.randint(1, 8)) for _ in range(12)]
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 60))) for _ in range(6)]
        texts += [" " * rng.randint(1, 3) + t + "  " for t in texts[:2]] + [random_text(rng, 80) for _ in range(3)]
        expected = [py.encode(t) for t in texts]
        assert [c.encode(t) for t in texts] == expected, case
        assert [c.encode(t) for t in reversed(texts)] == expected[::-1], case
        assert c._cache == py._cache, case


def test_score_bpe_by_hand_and_its_refusals(monkeypatch):
    """pieces ▁t -1, ▁th -2, ▁the -3, he -4: "the" -> ▁ t h e -> ▁t h e -> ▁th e -> ▁the. With ▁th
    UNUSED, ▁the still forms, then splits back into ▁th + e, and ▁th into ▁t + h. An unknown character
    without byte fallback or unknown piece is refused with the Python path's UserError."""
    pieces = {"▁t": -1.0, "▁th": -2.0, "▁the": -3.0, "he": -4.0, "▁": -5.0, "t": -6.0, "h": -6.0, "e": -6.0}
    tok = make_bpe(pieces, unused=set(), byte_fallback=False, unk=True, python=False, monkeypatch=monkeypatch)
    assert [tok.pieces[i] for i in tok.encode("the")] == ["▁the"]
    tok = make_bpe(pieces, unused={"▁th", "▁the"}, byte_fallback=False, unk=True, python=False,
                   monkeypatch=monkeypatch)
    assert [tok.pieces[i] for i in tok.encode("the")] == ["▁t", "h", "e"]
    tok = make_bpe(pieces, unused=set(), byte_fallback=False, unk=False, python=False, monkeypatch=monkeypatch)
    with pytest.raises(UserError, match="no unknown piece"):
        tok.encode("the x")


@cache
def sp_model(kind: str, rule: str) -> bytes:
    options = ref.LLAMA_OPTIONS if kind == "bpe" else {"byte_fallback": True, "normalization_rule_name": rule}
    return ref.train_model(kind, vocab_size=1000 if kind == "bpe" else 800, texts=ref.training_texts(30_000),
                           **options)


ARTIFACTS: dict[str, Callable[[], object]] = {
    "unigram nmt_nfkc": lambda: load_sentencepiece_model(sp_model("unigram", "nmt_nfkc")),
    "unigram identity": lambda: load_sentencepiece_model(sp_model("unigram", "identity")),
    "HF Precompiled": lambda: from_hf_json(ref.hf_json(sp_model("unigram", "nmt_nfkc"), "auto")),
    "SP BPE": lambda: load_sentencepiece_model(sp_model("bpe", "identity")),
}


@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_c_path_equals_python_path_on_the_parity_inputs(name, monkeypatch):
    """Real models trained by sentencepiece (and the HF file transformers converts one to): the parity
    strings and a sample of the code-point sweep give the same ids through both paths, cold and warm."""
    pytest.importorskip("sentencepiece")
    if name.startswith("HF"):
        pytest.importorskip("transformers")
    c = ARTIFACTS[name]()
    with monkeypatch.context() as m:
        m.setenv("LLMLAB_PURE_PYTHON", "1")
        py = ARTIFACTS[name]()
        assert py._engine_here() is None
    assert c._engine_here() is not None
    texts = ref.parity_texts() + ref.codepoint_sweep()[::24]
    expected = [py.encode(t, allowed_special="all") for t in texts]
    for _ in range(2):  # cold, then warm
        assert [c.encode(t, allowed_special="all") for t in texts] == expected


def test_a_piece_id_past_the_id_count_is_refused_when_the_engines_are_made() -> None:
    """Both engines check every piece's id against the id table they index (one check, in the trie)."""
    from llmlab.tokenizers import _fastunigram

    pieces = [("a", 0, -1.0), ("b", 5, -1.0)]  # id 5 of 2
    with pytest.raises(ValueError, match="not below n_ids"):
        _fastunigram.Engine(pieces, -20.0, 0, [], 2, unigram.WordPath, 1e9, 100, {}, {}, {}, {})
    with pytest.raises(ValueError, match="not below n_ids"):
        _fastunigram.ScoreBPE(pieces, [], 0, [], 2, 100, {})
    assert _fastunigram.ScoreBPE(pieces, [], 0, [], 6, 100, {}) is not None  # 6 ids: fine
