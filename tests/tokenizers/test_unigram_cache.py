"""The word caches of Unigram encoding are exact: cached (warm), first-time (cold) and whole-text
(uncached) Viterbi give the same ids.

The whole-text oracle is `encode_sample(nbest_size=1)`: one lattice over the whole normalised text,
one Viterbi, no cache. For SentencePiece's float32 arithmetic a word's path depends on the running
total before it, so the cache keeps each path with the range of totals it is sure for
(`stable_path`); these tests push totals past that range, onto exact ties and near-ties.
"""

from __future__ import annotations

import pickle
import random

import pytest

from llmlab.tokenizers.charsmap import Charsmap
from llmlab.tokenizers.sp_text import SPACE, SentencePieceNormalizer
from llmlab.tokenizers.unigram import UnigramTokenizer
from llmlab.tokenizers.unigram_lattice import (
    build_lattice,
    piece_prefixes,
    replay_float32,
    stable_path,
    text_stable_path,
    viterbi_float32,
)


def sp_style(pieces: dict[str, float], *, byte_fallback: bool = False) -> UnigramTokenizer:
    """A tokenizer that encodes as an imported .model does (float32 totals, words cut before runs of
    "▁"), spaces kept as they are."""
    byte_pieces = [(f"<0x{b:02X}>", 0.0) for b in range(256)] if byte_fallback else []
    normalizer = SentencePieceNormalizer(None, add_dummy_prefix=True, remove_extra_whitespaces=False)
    return UnigramTokenizer([("<unk>", 0.0), *byte_pieces, *pieces.items()], normalizer="none", float32=True,
                            byte_fallback=byte_fallback, text_normalizer=normalizer)


def whole_text(tok: UnigramTokenizer, text: str) -> list[int]:
    """The uncached oracle: one float32 Viterbi over the whole text's lattice."""
    return tok.encode_sample(text, nbest_size=1, seed=0)


def cold(tok: UnigramTokenizer) -> UnigramTokenizer:
    """A copy with every word cache empty (and its own C engine, if any): what a first encode sees."""
    return pickle.loads(pickle.dumps(tok))


@pytest.fixture(autouse=True, params=["C", "pure Python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test twice: with the C word search (when built) and with unigram.py's own, the C path's oracle."""
    monkeypatch.setenv("LLMLAB_PURE_PYTHON", "1" if request.param == "pure Python" else "0")


# "▁ab": ▁a + b = -2 beats ▁ab = -(2 + 2^-10) by 2^-10 in exact arithmetic; "▁c" moves the total by -1024
NEAR_TIE = {"▁c": -1024.0, "▁a": -1.0, "b": -1.0, "▁ab": -(2 + 2**-10), "▁": -10.0, "a": -10.0}  # "c" alone: unknown


def test_stable_path_limit_by_hand():
    """Word "▁ab" (n = 3 characters): the path ▁a b (total -2) wins by gap 2^-10 at its last position
    (position 2 has one edge, ▁a); the best totals are r = [0, -10 ("▁"), -1, -2], so R = 10 and
    limit = 2^-10 * 2^23 / (2*3 + 2) - 10 = 1014."""
    vocab = {p: (i, s) for i, (p, s) in enumerate(NEAR_TIE.items())}
    lattice = build_lattice("▁ab", vocab, max_len=3, unk_score=-1034.0)
    path, limit = stable_path(lattice)
    assert [e.token for e in path] == [1, 2]
    assert limit == 2**-10 * 2**23 / 8 - 10 == 1014.0
    # within the limit float32 agrees; at a total of -32768 (ulp 2^-8) the two paths round equal and the
    # tie goes to the earliest-starting last piece, "▁ab": the cached path would be wrong there
    for total in (0.0, -1.0, -1013.0, 1013.0):
        assert [e.token for e in viterbi_float32(lattice, start=total)[0]] == [1, 2]
    assert [e.token for e in viterbi_float32(lattice, start=-32768.0)[0]] == [3]


def test_cached_word_past_its_limit_is_walked_again():
    """ "ab" warms the cache with ▁a b; after 32 x "▁c" (total -32768) float32 takes ▁ab, and so must encode."""
    tok = sp_style(NEAR_TIE)
    ids = {p: i for i, (p, _) in enumerate(tok.pieces)}
    assert tok.encode("ab") == [ids["▁a"], ids["b"]]
    text = "c " * 32 + "ab"
    assert tok.encode(text) == whole_text(tok, text) == [ids["▁c"]] * 32 + [ids["▁ab"]]
    assert tok.encode("ab c " * 3) == whole_text(tok, "ab c " * 3)  # the same word early again: cached path
    assert tok.encode(text) == cold(tok).encode(text) == whole_text(tok, text)


def test_safe_words_are_joined_only_in_short_texts():
    """The fast path joins the cached ids of words whose range covers any text of _SAFE_CHARS characters
    (`_safe`). "▁ab" (▁a b -2.5 against ▁ab -4, limit ~1.6e6) is such a word here; a longer text still
    reaches totals that change it: after 16384 x "▁c" (-2^24, ulp 2) float32 takes ▁ab."""
    tok = sp_style({"▁c": -1024.0, "▁a": -1.5, "b": -1.0, "▁ab": -4.0, "▁": -10.0, "a": -10.0})
    ids = {p: i for i, (p, _) in enumerate(tok.pieces)}
    assert tok.encode("ab") == [ids["▁a"], ids["b"]] and "▁ab" in tok._safe
    assert tok.encode("c " * 500 + "ab") == [ids["▁c"]] * 500 + [ids["▁a"], ids["b"]]  # short: the fast path
    text = "c " * 16384 + "ab"
    assert tok.encode(text) == whole_text(tok, text) == [ids["▁c"]] * 16384 + [ids["▁ab"]]


def test_exact_ties_depend_on_the_total():
    """"----": -(1) + -(3) and -(3) + -(1) are equal exactly; which wins in float32 depends on the rounding
    of the total before, so the word is never served from the cache (limit <= 0)."""
    tok = sp_style({"▁": -0.7, "-": -1.1, "--": -2.3, "---": -3.3, "▁-": -1.9, "x": -5.3, "▁x": -4.1})
    vocab = tok.vocab
    _, limit = stable_path(build_lattice("▁----", vocab, max_len=tok.max_len, unk_score=tok.unk_score))
    assert limit <= 0
    for k in range(0, 400, 7):
        text = "x" * k + " ----" + " x" * (k % 5) + " ----"
        assert tok.encode(text) == whole_text(tok, text), k


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_random_near_ties_cold_warm_and_whole_text_agree(byte_fallback):
    """Random vocabularies whose scores are sums of a few coarse float32 values (near and exact ties
    abound), random texts of their characters plus unknown ones, encoded cold, warm and in new contexts
    (the same words after long prefixes and 'z' words, so totals grow to millions)."""
    rng = random.Random(7)
    for case in range(40):
        chars = "abc" + SPACE
        pieces: dict[str, float] = {}
        for _ in range(rng.randint(6, 20)):
            piece = "".join(rng.choice(chars) for _ in range(rng.randint(1, 4)))
            if SPACE in piece[1:] and case % 2:  # half the cases: no piece crosses a cut (cuts_are_exact)
                continue
            pieces[piece] = -4.0 * len(piece) - rng.choice([0.0, 2**-9, 2**-12, 2**-20])
        for c in "abc" + SPACE:
            pieces.setdefault(c, -40.0)
        pieces["▁z"] = -rng.choice([2.0**10, 2.0**16, 2.0**21])  # "z" words push the total far
        tok = sp_style(pieces, byte_fallback=byte_fallback)
        words = ["".join(rng.choice("abcé日") for _ in range(rng.randint(1, 6))) for _ in range(8)] + ["z"] * 2
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 300))) for _ in range(6)]
        texts += [" " * rng.randint(0, 3) + t + "  " for t in texts[:2]]
        expected = [whole_text(tok, t) for t in texts]
        assert [tok.encode(t) for t in texts] == expected, case  # cold, then warming as it goes
        assert [tok.encode(t) for t in texts] == expected, case  # warm
        assert [tok.encode(t) for t in reversed(texts)] == expected[::-1], case


def test_pieces_across_spaces_are_not_cut():
    """A piece with "▁" inside ("a▁b") crosses words, so such a model's text is one lattice, still cached
    by its whole text with a limit; runs of "▁" ("▁▁") are never cut."""
    tok = sp_style({"a▁b": -1.0, "▁a": -1.5, "▁b": -1.5, "▁▁": -0.5, "▁": -2.0, "a": -3.0, "b": -3.0})
    assert not tok._cuts_exact
    for text in ["a b", "a  b", "b a b a", "a b " * 50, "x a b"]:
        assert tok.encode(text) == whole_text(tok, text) == cold(tok).encode(text) == tok.encode(text), text


def test_unknown_characters_and_byte_fallback_in_cached_words():
    """Unknown characters inside cached words: one <unk> per run without byte fallback, their UTF-8
    bytes with it; the same when the word comes back warm in another context."""
    for byte_fallback in (False, True):
        tok = sp_style({"▁a": -1.0, "a": -2.0, "▁": -3.0}, byte_fallback=byte_fallback)
        for text in ["aé日a", "a aé日a", "é日 a aé日a é日"]:
            assert tok.encode(text) == whole_text(tok, text) == tok.encode(text)
        ids = tok.encode("é日")
        unk_ids = [0] if not byte_fallback else [1 + b for b in "é日".encode()]
        assert ids[1:] == unk_ids and tok.pieces[ids[0]][0] == "▁"


def test_replay_float32_sums_as_viterbi_float32():
    """replay_float32 is the running total float32 Viterbi reaches along a path: float32(-1e4 + -0.1) ..."""
    vocab = {"a": (1, -0.1), "b": (2, -7.3)}
    lattice = build_lattice("abab", vocab, max_len=1, unk_score=-20.0)
    path, total = viterbi_float32(lattice, start=-10_000.5)
    assert replay_float32(-10_000.5, [e.score for e in path]) == total == pytest.approx(-10_000.5 - 14.8, abs=1e-2)


@pytest.mark.parametrize("text", ["", " ", "   ", "a", "  a  b   c  ", "a▁", "▁ x", "tab\there", "a  "])
@pytest.mark.parametrize("squeeze", [False, True])
@pytest.mark.parametrize("prefix", [False, True])
def test_normalizer_fast_path_equals_chunks(text, squeeze, prefix):
    """Text the charsmap leaves alone skips the chunk loop (`_unmapped`); it must give what the loop gives."""
    norm = SentencePieceNormalizer(Charsmap({"\u00a0": " "}), add_dummy_prefix=prefix, remove_extra_whitespaces=squeeze)
    assert norm.charsmap is not None and norm.charsmap.leaves_unchanged(text)
    assert norm(text) == norm._from_chunks([(text, False)] if text else [])


def test_charsmap_leaves_unchanged_is_never_wrong():
    """leaves_unchanged(text) True means both ways of applying the map return the text; ASCII sources
    (control characters) and two-character sources (A + U+0300) are seen."""
    cm = Charsmap({"\x01": "", "\u00a0": " ", "A\u0300": "\u00c0", "\ufb01": "fi"})
    for text in ["plain ascii", "x\x01y", "nbsp\u00a0", "A\u0300", "A alone", "caf\u00e9", "\ufb01ne", "日本"]:
        if cm.leaves_unchanged(text):
            assert cm.chunks(text) == [(text, False)] and cm.hf_precompiled(text) == text, text
    assert not cm.leaves_unchanged("x\x01y") and not cm.leaves_unchanged("A\u0300") and cm.leaves_unchanged("abc")


def test_prefix_closed_lattice_equals_the_full_search():
    """build_lattice stopping at the first substring no piece starts with (`piece_prefixes`) finds the
    same edges, in the same order, as trying every length up to max_len; by hand: {"ab": .., "abcd": ..}
    gives {"a", "abc"} as None prefixes."""
    assert piece_prefixes({"ab": (1, -1.0), "abcd": (2, -2.0)}) == {
        "a": None, "ab": (1, -1.0), "abc": None, "abcd": (2, -2.0)}
    rng = random.Random(3)
    for _ in range(200):
        vocab = {"".join(rng.choice("ab▁") for _ in range(rng.randint(1, 5))): (i, -rng.random() * 9)
                 for i in range(rng.randint(1, 12))}
        text = "".join(rng.choice("ab▁c") for _ in range(rng.randint(0, 30)))
        full = build_lattice(text, vocab, max_len=5, unk_score=-20.0)
        assert build_lattice(text, piece_prefixes(vocab), max_len=5, unk_score=-20.0, prefix_closed=True) == full


def test_text_stable_path_equals_stable_path_of_the_lattice():
    """The one-pass search of encoding's cold path gives the lattice oracle's path and limit bit for bit,
    ties (scores from a coarse set), unknown characters and prefixes that are no piece included."""
    rng = random.Random(11)
    for _ in range(300):
        vocab = {"".join(rng.choice("ab▁") for _ in range(rng.randint(1, 5))): (i, -rng.choice([0.5, 1.0, 1.5, 2.25]))
                 for i in range(rng.randint(1, 12))}
        text = "".join(rng.choice("ab▁c") for _ in range(rng.randint(0, 30)))
        lattice = build_lattice(text, vocab, max_len=5, unk_score=-12.0)
        assert text_stable_path(text, piece_prefixes(vocab), max_len=5, unk_score=-12.0) == stable_path(lattice)


@pytest.mark.parametrize("prefix", [True, False])
def test_split_fast_path_keeps_runs_edges_and_empty_text(prefix):
    """Text cut by str.split ("▁w▁w") and by cut_words (runs of "▁", no "▁" in front) gives the same ids:
    trailing and doubled spaces, text that is only spaces, empty text, with and without the dummy prefix."""
    pieces = {"▁a": -1.0, "▁b": -1.5, "▁▁": -2.0, "▁": -3.0, "a": -4.0, "b": -4.0, "ab": -3.5}
    normalizer = SentencePieceNormalizer(None, add_dummy_prefix=prefix, remove_extra_whitespaces=False)
    tok = UnigramTokenizer([("<unk>", 0.0), *pieces.items()], normalizer="none", float32=True,
                           text_normalizer=normalizer)
    texts = ["", " ", "  ", "a", "a ", "a  b", " a b ", "ab ab", "b  ", "a b a b"]
    for _ in range(2):  # cold, then warm (the fast paths)
        assert [tok.encode(t) for t in texts] == [whole_text(tok, t) for t in texts]
    assert tok.encode("") == [] and "" in tok._safe_spaced  # the word "▁" alone
