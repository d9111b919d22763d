"""Tokenizer analysis, checked on tiny tokenizers where every number is computed by hand."""

import pytest

from llmlab.errors import UserError
from llmlab.tokenizers.analysis import align_pieces, analyze, premiums, script_of, tokens_per_word, word_spans
from llmlab.tokenizers.bpe import BPETokenizer

# merges (a, b) -> "ab" (id 256), (" ", "ab") -> " ab" (id 257); vocab 258 ordinary tokens
TOK = BPETokenizer.from_merges([(b"a", b"b"), (b" ", b"ab")])


def test_ab_abc_by_hand():
    """ "ab abc": chunks "ab", " abc" -> [ab] [ ab, c]: 3 tokens for 6 bytes.

    bytes/token 6/3 = 2; words "ab" (token ab) and "abc" (tokens " ab", "c"): fertility 3/2,
    continued 1/2; ids used {256, 257, 99}: 3 of 258; lengths 2, 3, 1 bytes.
    """
    s = analyze(TOK, "ab abc")
    assert (s.n_tokens, s.n_bytes, s.n_words) == (3, 6, 2)
    assert s.bytes_per_token == 2.0 and s.chars_per_token == 2.0
    assert s.fertility == 1.5 and s.continued_words == 0.5
    assert (s.vocab_used, s.vocab_size) == (3, 258) and s.vocab_utilisation == pytest.approx(3 / 258)
    assert s.length_histogram == {1: 1, 2: 1, 3: 1}
    assert s.unk_tokens == 0 and s.partial_tokens == 0 and s.alignment == "in-context"
    assert s.unused_tokens == 255


def test_cjk_by_hand():
    """ "ab 日本" = 2 + 1 + 6 bytes; 日 = E6 97 A5, 本 = E6 9C AC, no merges among them.

    tokens: ab, " ", E6, 97, A5, E6, 9C, AC -> 8 tokens; bytes/token 9/8, chars/token 5/8.
    words: "ab" (1 token), "日" (3), "本" (3): fertility 7/3, continued 2/3.
    partial tokens: the 6 bytes of the CJK characters, 6/8. Distinct ids: 7 of 258.
    Per script: Latin 1 word 1 token; Han 2 words 6 tokens, fertility 3.
    """
    s = analyze(TOK, "ab 日本")
    assert (s.n_tokens, s.n_bytes, s.n_chars, s.n_words) == (8, 9, 5, 3)
    assert s.bytes_per_token == 9 / 8 and s.chars_per_token == 5 / 8
    assert s.fertility == pytest.approx(7 / 3) and s.continued_words == pytest.approx(2 / 3)
    assert s.partial_tokens == 6 and s.partial_rate == 0.75
    assert s.vocab_used == 7 and s.length_histogram == {1: 7, 2: 1}
    assert s.top_tokens[0] == ("<0xE6>", 2)
    assert s.by_script["Han"].words == 2 and s.by_script["Han"].fertility == 3.0
    assert s.by_script["Latin"].fertility == 1.0 and s.by_script["Latin"].continued_words == 0.0
    assert "␣ab" in s.unused_examples


def test_a_token_spanning_two_cjk_characters_counts_for_both():
    """With a merge of 日本's bytes into one token, each character's fertility is 1: 2 words, 1 token each."""
    merges = [(b"\xe6", b"\x97"), (b"\xe6\x97", b"\xa5"), (b"\xe6", b"\x9c"), (b"\xe6\x9c", b"\xac"),
              ("日".encode(), "本".encode())]
    s = analyze(BPETokenizer.from_merges(merges), "日本")
    assert s.n_tokens == 1 and s.fertility == 1.0 and s.by_script["Han"].tokens == 2


def test_words_and_scripts():
    assert word_spans("größe, 2024!") == [(0, 7, "größe"), (9, 13, "2024")]  # ö, ß: 2 bytes each
    assert [w for _, _, w in word_spans("東京へ行く")] == ["東", "京", "へ", "行", "く"]
    assert [script_of(w) for w in ("мир", "Καλη", "नमस्ते", "مرحبا", "カ", "é", "42", "ⴰ")] == [
        "Cyrillic", "Greek", "Devanagari", "Arabic", "Katakana", "Latin", "Digits", "Other"]
    assert tokens_per_word([(0, 2, "ab"), (3, 6, "abc")], [b"ab", b" ab", b"c"]) == [1, 2]


def test_lossy_tokenizer_counts_words_one_by_one():
    """A lowercasing BPE does not give back the text's bytes: words are encoded alone ("per-word")."""
    tok = BPETokenizer.from_merges([(b"a", b"b")], normalizer="lowercase")
    s = analyze(tok, "AB ab")
    assert s.alignment == "per-word" and s.fertility == 1.0  # "ab" and " ab" -> [ab], [" ", ab] less the space


def test_premiums():
    assert premiums({"en": 10, "hi": 25, "ja": 12}) == {"en": 1.0, "hi": 2.5, "ja": 1.2}
    with pytest.raises(UserError, match="'en'"):
        premiums({"hi": 3})


def test_unigram_unk_and_byte_fallback_are_counted():
    unigram = pytest.importorskip("llmlab.tokenizers.unigram")
    pieces = [("<unk>", 0.0), ("▁a", -1.0), ("b", -2.0), ("▁", -3.0)]
    tok = unigram.UnigramTokenizer(pieces, normalizer="none")
    s = analyze(tok, "ab x")  # ▁a b ▁ <unk>: 4 tokens, one unknown
    assert s.n_tokens == 4 and s.unk_tokens == 1 and s.unk_rate == 0.25
    # " a" "b" " " <unk> spell " ab x" (the dummy prefix first), <unk> standing for "x": ab 2 tokens, x 1
    assert s.alignment == "in-context" and s.fertility == 1.5


def test_unigram_words_are_counted_in_context_not_alone():
    """Unigram in context: "▁ab" is one piece, but after a newline "ab" has no "▁" and takes a, b.

    "ab\nab" -> words "▁ab\nab" -> [▁ab, \n, a, b]: word 1 has 1 token, word 2 has 2: fertility 3/2.
    Encoded alone, each word would get the dummy prefix, "▁ab", and count 1 (fertility 1, too low).
    """
    unigram = pytest.importorskip("llmlab.tokenizers.unigram")
    pieces = [("<unk>", 0.0), ("▁ab", -1.0), ("a", -2.0), ("b", -2.0), ("\n", -2.0), ("▁", -3.0)]
    tok = unigram.UnigramTokenizer(pieces, normalizer="nfkc")
    s = analyze(tok, "ab\nab")
    assert [tok.token_bytes(i) for i in tok.encode("ab\nab")] == [b" ab", b"\n", b"a", b"b"]
    assert s.alignment == "in-context" and s.fertility == 1.5 and s.continued_words == 0.5


def test_align_pieces():
    assert align_pieces(b" ab", [b" a", b"b"]) == [b" a", b"b"]
    assert align_pieces(b" ab", [b" a", b"c"]) is None
    assert align_pieces("x☃y".encode(), [b"x", None, b"y"]) == [b"x", "☃".encode(), b"y"]
    assert align_pieces(b"xy", [b"x", None, None]) is None  # two unknowns in a row
