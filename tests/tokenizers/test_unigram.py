"""The Unigram LM tokenizer: hand-worked lattices, the NumPy trainer against the pure-Python
lattice, and parity with SentencePiece, HF `tokenizers` and `transformers` (offline, seeded).
"""

from __future__ import annotations

import io
import itertools
import math
import random
import unicodedata
from collections import Counter
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.errors import UserError
from llmlab.tokenizers import unigram_arrays as ua
from llmlab.tokenizers import unigram_train as ut
from llmlab.tokenizers.hf_io import load_tokenizer
from llmlab.tokenizers.unigram import UNK, UnigramTokenizer, build_lattice, nbest_paths, viterbi
from llmlab.tokenizers.unigram_io import from_hf_json, hf_score, load_sentencepiece_model
from llmlab.tokenizers.unigram_train import train_unigram

spm = pytest.importorskip("sentencepiece")

VARIED = [
    "",
    " ",
    "Hello world",
    "  two leading, two  inner and trailing  ",
    "Question: What is 12 + 7? Answer: 19.",
    "CJK 日本語のテキスト、中文字符 한국어",
    "emoji 👍🏽 family 👨‍👩‍👧 and 🤖",
    "tabs\tand\nnewlines\n\nhere",
    "x" * 300,
    "ünïcödé café naïve",
]


@cache
def corpus(chars: int = 200_000, seed: int = 0) -> tuple[str, ...]:
    docs = pretrain_documents(GenerateConfig(kind="pretrain", chars=chars, seed=seed))
    return tuple(line for d in docs for line in d.splitlines() if line.strip())


@cache
def trained(byte_fallback: bool) -> UnigramTokenizer:
    return train_unigram(corpus(), 600, byte_fallback=byte_fallback, normalizer="none",
                         special_tokens=["<s>", "</s>"])


def tiny(pieces: dict[str, float], **kwargs) -> UnigramTokenizer:
    return UnigramTokenizer([("<unk>", 0.0), *pieces.items()], normalizer="none", **kwargs)


def test_viterbi_by_hand():
    """"ab" -> "▁ab". Paths and their scores:
    ▁ab = -2.5;  ▁a b = -1.0 - 2.0 = -3.0;  ▁ a b = -3 - 3 - 2 = -8.0. Best: ▁ab.
    "abb" -> "▁abb": ▁ab b = -4.5 beats ▁a b b = -5.0.
    """
    tok = tiny({"▁a": -1.0, "b": -2.0, "▁ab": -2.5, "a": -3.0, "▁": -3.0})
    piece = {p: i for i, (p, _) in enumerate(tok.pieces)}
    assert tok.encode("ab") == [piece["▁ab"]]
    assert tok.encode("abb") == [piece["▁ab"], piece["b"]]
    assert tok.decode(tok.encode("abb ab")) == "abb ab"


def brute_force(text: str, vocab: dict[str, tuple[int, float]], unk: float) -> float:
    """The best score over every way to cut `text` (unknown single characters score `unk`)."""
    best = -math.inf
    n = len(text)
    for cuts in itertools.product([0, 1], repeat=n - 1):
        bounds = [0, *(i + 1 for i, c in enumerate(cuts) if c), n]
        score = 0.0
        for a, b in itertools.pairwise(bounds):
            piece = text[a:b]
            if piece in vocab:
                score += vocab[piece][1]
            elif b - a == 1 and not any(text[a] == p for p in vocab):
                score += unk
            else:
                score = -math.inf
                break
        best = max(best, score)
    return best


@settings(max_examples=150, deadline=None)
@given(st.text("abc", min_size=1, max_size=9), st.lists(st.text("abc", min_size=1, max_size=4), max_size=10),
       st.randoms(use_true_random=False))
def test_viterbi_matches_brute_force(text, extra, rnd):
    vocab = {p: (i, -rnd.uniform(0.5, 5)) for i, p in enumerate(dict.fromkeys(["a", "b", *extra]))}
    lattice = build_lattice(text, vocab, max_len=4, unk_score=-20.0)
    path = viterbi(lattice)
    assert "".join(text[e.start:e.end] for e in path) == text
    assert sum(e.score for e in path) == pytest.approx(brute_force(text, vocab, -20.0))


def test_nbest_and_sampling_by_hand():
    """"aa" with a: log .5, aa: log .2 (and no "▁"): paths a+a (p = .25) and aa (p = .2).
    n-best: [a a, aa]. Sampling with alpha = 1: P(a a) = .25 / .45 = 0.5556.
    """
    tok = tiny({"a": math.log(0.5), "aa": math.log(0.2)}, add_dummy_prefix=False)
    a, aa = 1, 2
    paths = nbest_paths(tok.lattice("aa"), 5)
    assert [[e.token for e in p] for _, p in paths] == [[a, a], [aa]]
    rng = random.Random(0)
    draws = Counter(tuple(tok.encode_sample("aa", alpha=1.0, generator=rng)) for _ in range(4000))
    assert draws[(a, a)] / 4000 == pytest.approx(0.25 / 0.45, abs=0.03)
    draws = Counter(tuple(tok.encode_sample("aa", alpha=1.0, nbest_size=2, seed=s)) for s in range(2000))
    assert draws[(a, a)] / 2000 == pytest.approx(0.25 / 0.45, abs=0.04)
    assert tok.encode_sample("aa", nbest_size=1, seed=0) == tok.encode("aa") == [a, a]
    with pytest.raises(UserError):
        tok.encode_sample("aa")


def _edges(words: dict[str, int], pieces: list[str]) -> ua.Edges:
    """The trainer's array lattices of `words` for `pieces` (single characters listed first)."""
    chars = {p: 1 for p in pieces if len(p) == 1}
    hashes = []
    for p in pieces:
        *_, (_, _, h) = _Strings_windows(p, chars)
        hashes.append(int(h[0]))
    strings = ua.Strings.of(list(words), chars, weights=np.array(list(words.values()), dtype=float))
    lengths = np.array([len(p) for p in pieces])
    return ua.Edges.build(strings, ua.hash_table(np.array(hashes, dtype=np.uint64), lengths,
                                                  np.arange(len(pieces))), len(pieces), max_len=int(lengths.max()))


def _Strings_windows(piece: str, chars: dict[str, int]):
    return list(ua.Strings.of([piece], chars).windows(len(piece)))


def test_em_expected_counts_by_hand():
    """Corpus {"ab": 1, "a": 2}, pieces a, b (p = .5 each), ab (p = .25).
    "ab": paths a+b (p = .25) and ab (p = .25), posterior .5 each -> a .5, b .5, ab .5.
    "a": one path -> a 1, twice. Expected: a 2.5, b 0.5, ab 0.5.
    Log-likelihood: log(.5) (for "ab") + 2 log(.5) (for "a") = 3 log .5.
    """
    pieces = ["a", "b", "ab"]
    edges = _edges({"ab": 1, "a": 2}, pieces)
    scores = np.log([0.5, 0.5, 0.25, 1e-9])  # last: unknown characters
    expected, loglik = ua.expected_counts(edges, np.ones(3, dtype=bool), scores)
    np.testing.assert_allclose(expected[:3], [2.5, 0.5, 0.5])
    assert loglik == pytest.approx(3 * math.log(0.5))


def test_viterbi_tie_is_broken_to_a_best_path():
    """"aa" with a = -0.5 and aa = -1.0: a + a and aa both score -1.0 (the tie that hypothesis found);
    the array Viterbi returns -1.0 and one of the two segmentations."""
    edges = _edges({"aa": 1}, ["a", "aa"])
    best, owner, piece = ua.viterbi_paths(edges, np.ones(2, dtype=bool), np.array([-0.5, -1.0, -25.0]))
    assert best[0] == pytest.approx(-1.0)
    assert sorted(piece[owner == 0].tolist()) in ([0, 0], [1])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text("abcd", min_size=1, max_size=8), min_size=1, max_size=6),
       st.lists(st.text("abc", min_size=2, max_size=4), max_size=8), st.randoms(use_true_random=False))
def test_array_lattices_match_pure_python(words, extra, rnd):
    """The NumPy forward-backward and Viterbi of the trainer against unigram.py's lattice: all pieces
    alive, then some dead (characters too: their positions get unknown-character edges back)."""
    pieces = ["a", "b", "c", *dict.fromkeys(e for e in extra)]  # "d" is unknown
    scores = np.array([-rnd.uniform(0.5, 6) for _ in pieces] + [-25.0])
    counts = Counter(words)
    edges = _edges(dict(counts), pieces)
    for alive in (np.ones(len(pieces), dtype=bool), np.array([rnd.random() < 0.7 for _ in pieces])):
        _check_lattices(edges, pieces, alive, scores, counts)


def _check_lattices(edges: ua.Edges, pieces: list[str], alive: np.ndarray, scores: np.ndarray,
                    counts: Counter[str]) -> None:
    expected, loglik = ua.expected_counts(edges, alive, scores)
    best, owner, piece = ua.viterbi_paths(edges, alive, scores)
    vocab = {p: (i, float(scores[i])) for i, p in enumerate(pieces) if alive[i]}
    want = np.zeros(len(pieces) + 1)
    want_loglik = 0.0
    for k, (w, n) in enumerate(counts.items()):
        lattice = build_lattice(w, vocab, max_len=4, unk_score=-25.0)
        paths = [p for _, p in nbest_paths(lattice, 10_000)]
        z = math.log(sum(math.exp(sum(e.score for e in p)) for p in paths))
        want_loglik += n * z
        for p in paths:
            for e in p:
                want[len(pieces) if e.token == UNK else e.token] += n * math.exp(sum(x.score for x in p) - z)
        assert best[k] == pytest.approx(sum(e.score for e in viterbi(lattice)))
        # the array path is one of the best paths (ties, e.g. a + a = aa, may be broken either way)
        optimal = [sorted(len(pieces) if e.token == UNK else e.token for e in p) for p in paths
                   if sum(e.score for e in p) == pytest.approx(best[k], abs=1e-9)]
        assert sorted(piece[owner == k].tolist()) in optimal
    np.testing.assert_allclose(expected, want, rtol=1e-9, atol=1e-12)
    assert loglik == pytest.approx(want_loglik)


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_round_trip_and_unknowns(byte_fallback):
    tok = trained(byte_fallback)
    assert tok.vocab_size == 600
    for text in [*VARIED, *corpus()[:50]]:
        ids = tok.encode(text)
        if byte_fallback:
            assert tok.decode(ids) == text and tok.unk_id not in ids
        else:
            assert (tok.decode(ids) == text) == (tok.unk_id not in ids)
    stream = tok.stream_decoder()
    assert "".join(stream(tok.encode("héllo wörld 🤖"))) == tok.decode(tok.encode("héllo wörld 🤖"))
    if not byte_fallback:
        assert tok.encode("☃☃") == [tok.token_to_id("▁"), tok.unk_id]  # a run of unknowns is one <unk>


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_byte_fallback_round_trip(text):
    tok = trained(True)
    assert tok.decode(tok.encode(text)) == text


def test_nfkc_default():
    tok = UnigramTokenizer([("<unk>", 0.0), ("▁fi", -1.0), ("▁", -2.0), ("f", -3.0), ("i", -3.0)])
    assert tok.decode(tok.encode("ﬁ")) == unicodedata.normalize("NFKC", "ﬁ") == "fi"
    assert tok.encode("ﬁ") == [1]


# ---------------------------------------------------------------------- HF tokenizers and transformers


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_tokenizer_json_matches_hf(tmp_path, byte_fallback):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = trained(byte_fallback)
    tok.save(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    again = load_tokenizer(tmp_path)
    assert again.to_hf_json() == tok.to_hf_json()
    for text in [*VARIED, *corpus()[:100], "<s> special </s>"]:
        ids = tok.encode(text, allowed_special="all")
        assert hf.encode(text).ids == ids, text
        assert fast.encode(text, add_special_tokens=False) == ids, text
        assert again.encode(text) == tok.encode(text)
        if byte_fallback:
            assert hf.decode(tok.encode(text)) == text


@settings(max_examples=80, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_tokenizer_json_matches_hf_on_any_text(text):
    pytest.importorskip("tokenizers")
    tok = trained(True)
    hf = _hf(True)
    assert hf.encode(text).ids == tok.encode(text, allowed_special="all")


@cache
def _hf(byte_fallback: bool):
    import json

    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(trained(byte_fallback).to_hf_json()))


# ---------------------------------------------------------------------- SentencePiece


def spm_model(texts, vocab_size: int, **options) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
                                   model_type="unigram", minloglevel=2, num_threads=1, **options)
    return buf.getvalue()


@pytest.mark.parametrize("options", [
    {"normalization_rule_name": "identity", "remove_extra_whitespaces": False, "byte_fallback": True},
    {"normalization_rule_name": "identity", "byte_fallback": False},
    {"normalization_rule_name": "nfkc", "remove_extra_whitespaces": False, "byte_fallback": False},
], ids=["identity-bytes", "identity-squeeze", "nfkc"])
def test_sentencepiece_model_encodes_identically(options):
    model = spm_model(corpus(100_000), 700, **options)
    sp = spm.SentencePieceProcessor(model_proto=model)
    tok = load_sentencepiece_model(model)
    assert tok.vocab_size == sp.get_piece_size()
    texts = [*VARIED, *corpus(20_000, seed=3)]
    for text in texts:
        assert tok.encode(text) == sp.encode(text), text
        if options["byte_fallback"] and "remove_extra_whitespaces" in options:
            assert tok.decode(tok.encode(text)) == sp.decode(sp.encode(text)) == text


def test_compression_and_unknowns_vs_sentencepiece():
    """Both trained on the same ~200 KB at vocab 1000, measured on other documents of the same world.

    Both forbid pieces that mix scripts (split_by_unicode_script), so the vocabularies are close;
    the bound is one-sided: llmlab's bytes/token must be no more than 3% below SentencePiece's.
    """
    texts = corpus()
    ours = train_unigram(texts, 1000, normalizer="none")
    sp = spm.SentencePieceProcessor(model_proto=spm_model(
        texts, 1000, normalization_rule_name="identity", remove_extra_whitespaces=False, bos_id=-1, eos_id=-1))
    held = corpus(50_000, seed=7)
    n_bytes = sum(len(t.encode()) for t in held)
    ours_bpt = n_bytes / sum(len(ours.encode(t)) for t in held)
    spm_bpt = n_bytes / sum(len(sp.encode(t)) for t in held)
    assert ours_bpt >= 0.97 * spm_bpt, (ours_bpt, spm_bpt)
    for text in ["☃", "☃☃ ☃", " ☃"]:  # unknown characters: one <unk> per run, in both
        assert [ours.pieces[i][0] for i in ours.encode(text)] == [sp.id_to_piece(i) for i in sp.encode(text)]


def test_bad_arguments():
    with pytest.raises(UserError):
        train_unigram(["a b"], 3, byte_fallback=True)
    with pytest.raises(UserError):
        train_unigram([], 100)
    with pytest.raises(UserError):
        UnigramTokenizer([("<unk>", 0.0), ("a", -1.0), ("a", -2.0)])


# ---------------------------------------------------------------------- exact ties, scripts, pre-tokenizer

TIES = ["  ---------", " -----------------------------------", "\t\t----------------------------------------",
        "### DEP0111: `process.binding()`", "none of the 16000+ merges", "0111 1111 00000 ====== ******",
        "x" * 40, "  " + "-" * 97]


def _tie_corpus() -> list[str]:
    """Runs of one character in many lengths: pieces like "-", "--", "----" whose permutations tie."""
    rng = random.Random(0)
    return [f"{c * rng.randint(1, 40)} {rng.randint(0, 99999)} {w}" for c in "-=*x0"
            for w in ("word", "words", "other") for _ in range(60)] + list(corpus(30_000))


def test_sentencepiece_ties_float32():
    """Same pieces in another order tie exactly; SentencePiece breaks the tie by float32 rounding
    of the running total from the start of the text (not of each word), then by earliest start."""
    model = spm_model(_tie_corpus(), 400, normalization_rule_name="identity", remove_extra_whitespaces=False)
    sp = spm.SentencePieceProcessor(model_proto=model)
    tok = load_sentencepiece_model(model)
    assert tok.float32
    for text in [*TIES, *(t * 3 for t in TIES)]:
        assert tok.encode(text) == sp.encode(text), text


def test_hf_ties_float64(tmp_path):
    """HF sums in float64 per word and reads JSON scores with serde_json, one ULP off for 17 digits:
    a SentencePiece model written as tokenizer.json and read back encodes tie-heavy text as HF."""
    tokenizers = pytest.importorskip("tokenizers")
    import json

    model = spm_model(_tie_corpus(), 400, normalization_rule_name="identity", remove_extra_whitespaces=False)
    data = load_sentencepiece_model(model).to_hf_json()
    hf = tokenizers.Tokenizer.from_str(json.dumps(data))
    again = from_hf_json(data)
    assert not again.float32
    back = json.loads(hf.to_str())["model"]["vocab"]
    assert [hf_score(s) for _, s in data["model"]["vocab"]] == [s for _, s in back]
    for text in [*TIES, *(t * 3 for t in TIES)]:
        assert again.encode(text) == hf.encode(text).ids, text


def test_hf_score_by_hand():
    """serde_json: 76636810302734375 / 1e16 -> -7.663681030273437 (Python: -7.6636810302734375)."""
    assert hf_score(-7.6636810302734375) == -7.663681030273437
    assert hf_score(-7.66368103027344) == -7.66368103027344  # 15 digits: exact


def test_float32_viterbi_by_hand():
    """a: -1, aa: -2: "aaa" ties between a+aa and aa+a (-3); the earliest-starting last piece wins."""
    vocab = {"a": (1, -1.0), "aa": (2, -2.0)}
    lattice = build_lattice("aaa", vocab, max_len=2, unk_score=-20.0)
    for f32 in (False, True):
        assert [e.token for e in viterbi(lattice, float32=f32)] == [1, 2]


def test_pruning_losses_by_hand():
    """Words {abc: 2, ab: 3, bc: 1, c: 1}; log-probs a, b, c: -3, ab: -2, bc: -2.5, abc: -2.2.

    Viterbi: abc | ab | bc | c, so freq abc 2, ab 3, bc 1, c 1 (sum 7, 7 words). Second-best
    segmentations: abc -> ab + c (-5 beats a + bc, -5.5), ab -> a + b, bc -> b + c.
        loss(abc) = 2/7 (log 2/7 - log (3+2)/(7+2) - log (1+2)/9)   = 0.1239
        loss(ab)  = 3/7 (log 3/7 - 2 log (0+3)/(7+3))                = 0.6688
        loss(bc)  = 1/7 (log 1/7 - log (0+1)/(7+1) - log (1+1)/8)   = 0.2171
    Pruning to 3 keeps c (a character on a path) and the two largest losses: ab, bc.
    """
    pieces = ["a", "b", "c", "ab", "bc", "abc"]
    words = {"abc": 2, "ab": 3, "bc": 1, "c": 1}
    chars = {p: 1 for p in pieces if len(p) == 1}
    hashes = np.array([int(_Strings_windows(p, chars)[-1][2][0]) for p in pieces], dtype=np.uint64)
    scores = np.array([-3.0, -3.0, -3.0, -2.0, -2.5, -2.2])
    alive = np.ones(6, dtype=bool)
    loss, candidate, kept = ut.pruning_losses(_edges(words, pieces), pieces, hashes, chars, alive, scores)
    log = math.log
    want = {3: 3 / 7 * (log(3 / 7) - 2 * log(3 / 10)), 4: 1 / 7 * (log(1 / 7) - log(1 / 8) - log(2 / 8)),
            5: 2 / 7 * (log(2 / 7) - log(5 / 9) - log(3 / 9))}
    assert candidate.tolist() == [False, False, False, True, True, True]
    assert kept.tolist() == [False, False, True, False, False, False]
    np.testing.assert_allclose(loss[[3, 4, 5]], [want[3], want[4], want[5]], rtol=1e-12)
    new = ut.prune(_edges(words, pieces), pieces, hashes, chars, alive, scores, keep=3)
    assert [p for p, a in zip(pieces, new, strict=True) if a] == ["c", "ab", "bc"]


def _seeds(texts: list[str], *, coverage: float = 1.0) -> dict[str, float]:
    """seed_pieces on `texts`: {piece: freq x length} of the seeds that are no single characters."""
    followed = ut.count_words(texts, normalizer="none", add_dummy_prefix=True)
    chars = ut.required_chars(ut.merge_followers(followed), coverage)
    pieces, scores, _ = ut.seed_pieces(followed, chars, max_piece_length=16, seed_size=10**6)
    values = np.exp(scores) / np.exp(scores[:len(chars)]).sum() * sum(chars.values())  # undo the log-prob
    return {p: round(float(v), 6) for p, v in zip(pieces[len(chars):], values[len(chars):], strict=True)}


def test_script_breaks_and_seeds():
    """split_by_unicode_script: no seed mixes Latin with Common ("self(" or "x."), nor digits with letters.

    "▁self" is followed by "(" and "." (right-maximal, 5 + 5 times); "▁a" by "1" 3 times and by
    "▁" once; "▁日本語のテキスト" (kana count as Han) by the end of a text and by "。".
    """
    texts = ["self(x)"] * 5 + ["self.x"] * 5 + ["a1b"] * 3 + ["a b"] + ["日本語のテキスト"] * 2 + ["日本語のテキスト。"]
    seeds = _seeds(texts)
    assert seeds["▁self"] == 10 * 5 and seeds["▁a"] == 4 * 2 and seeds["▁日本語のテキスト"] == 3 * 9
    assert not [s for s in seeds if any(c in s for c in "(.。1") and len(s) > 1]


def test_seeds_are_right_maximal_repeats():
    """SentencePiece's seeds are the right-maximal repeats of the running text (suffix-tree nodes).

    "▁sel" is always followed by "f": no seed. "elf" (5 times) ends "▁self" and goes on in "▁selfish":
    a seed, though always after "s" (no left-maximality). "▁selfish" always ends its text, and "▁в"
    is always followed by the next word's "▁": no seeds, as "▁в▁" is no piece either; "▁мы" ends
    its text once and is followed by "▁" once.
    """
    seeds = _seeds(["self", "self", "self selfish", "selfish", "в доме", "в доме", "мы", "мы в доме"])
    assert "▁sel" not in seeds and seeds["▁self"] == 5 * 5 and seeds["elf"] == 5 * 3 and "▁selfish" not in seeds
    assert "▁в" not in seeds and seeds["▁мы"] == 2 * 3


def _brute_force_seeds(texts: list[str], chars: dict[str, int]) -> dict[str, float]:
    """SentencePiece's rule on the running text: every substring of 2..16 characters, each known,
    "▁" only first, no two neighbours of different scripts, occurring at least twice and followed by
    at least two different characters (unknown characters are one character, the end of a text another)."""
    stream = "".join("▁" + t.replace(" ", "▁") + "\0" for t in texts)
    stream = "".join(c if c in chars or c == "\0" else "\u2585" for c in stream)

    def valid(s: str) -> bool:
        cls = [ut.script_class(c, split_by_number=True) for c in s]
        return (all(c in chars for c in s) and "▁" not in s[1:]
                and all(-1 in (x, y) or x == y for x, y in itertools.pairwise(cls)))

    count: Counter[str] = Counter()
    after: dict[str, set[str]] = {}
    for i in range(len(stream)):
        for n in range(2, 17):
            if i + n < len(stream) and valid(sub := stream[i:i + n]):
                count[sub] += 1
                after.setdefault(sub, set()).add(stream[i + n])
    return {s: float(k * len(s)) for s, k in count.items() if k >= 2 and len(after[s]) >= 2}


@pytest.mark.parametrize("coverage", [1.0, 0.95])
def test_seeds_match_brute_force(coverage):
    """Random texts of a few syllables, digits, punctuation and Cyrillic: seed_pieces' seeds and their
    freq x length are those of the brute-force scan of the running text."""
    rng = random.Random(1)
    syllables = ["ka", "lo", "ri", "mu", "te", "вд", "ом", "7", "42", ".", "(", "é", "q"]
    texts = ["".join(rng.choice([*syllables, " ", " "]) for _ in range(rng.randint(1, 12))) for _ in range(150)]
    followed = ut.count_words(texts, normalizer="none", add_dummy_prefix=True)
    chars = ut.required_chars(ut.merge_followers(followed), coverage)
    assert _seeds(texts, coverage=coverage) == _brute_force_seeds(texts, chars)


def test_pre_tokenizer_matches_hf():
    """The hybrid: script chunks before the lattice, written as Split(regex, Isolated) + Metaspace."""
    tokenizers = pytest.importorskip("tokenizers")
    import json

    tok = train_unigram(corpus(), 500, byte_fallback=True, normalizer="none", pre_tokenizer="script")
    assert tok.words("a(b c)") == ["▁a", "(", "b", "▁c", ")"]
    data = tok.to_hf_json()
    hf = tokenizers.Tokenizer.from_str(json.dumps(data))
    again = from_hf_json(data)
    assert again.pre_tokenizer == "script"
    for text in [*VARIED, *corpus()[:100], "Привет, мир! hello 日本語"]:
        ids = tok.encode(text)
        assert hf.encode(text).ids == ids == again.encode(text), text
        assert tok.decode(ids) == text
        assert not any(p in tok.pieces[i][0] for i in ids for p in "(),.:" if len(tok.pieces[i][0]) > 1)


def _round_sizes(messages: list[str]) -> list[int]:
    """The piece counts after each round's last EM sub-iteration, from train_unigram's progress."""
    sizes = [int(m.split(": ")[1].split(" pieces")[0].replace(",", "")) for m in messages if m.startswith("round")]
    return sizes[1::2]  # two sub-iterations per round


def test_em_rounds_follow_sentencepiece(capfd):
    """Seeds, EM and pruning as SentencePiece 0.2's (read from its log, "EM sub_iter=1 size=N"):
    the same number of rounds and sizes within 1% each round. The loop stops when one more pruning
    by 0.75 would go below 1.1 x vocab_size (meta pieces counted in); the final cut then takes the
    best-scoring pieces of the last EM's survivors."""
    said: list[str] = []
    vocab = 1000
    texts = corpus()
    tok = train_unigram(texts, vocab, byte_fallback=True, normalizer="none", progress=said.append)
    ours = _round_sizes(said)
    capfd.readouterr()
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab,
                                   model_type="unigram", minloglevel=0, num_threads=1, byte_fallback=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False)
    log = capfd.readouterr().err
    theirs = [int(line.split(" size=")[1].split()[0]) for line in log.splitlines() if "EM sub_iter=1 size=" in line]
    assert len(ours) == len(theirs) and np.allclose(ours, theirs, rtol=0.01), (ours, theirs)
    assert int(0.75 * ours[-1]) <= int(1.1 * vocab) < int(0.75 * ours[-2])
    assert tok.vocab_size == vocab
