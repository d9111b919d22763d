"""The pipeline stages alone: pre-tokenizers, normalizers and the byte <-> character map.

Ground truth from outside: the GPT-2 and cl100k patterns as tiktoken writes them (run
with the `regex` module, which knows possessive quantifiers), HF `tokenizers`' own
Split / ByteLevel pre-tokenizers and normalizers, and splits worked out by hand.
"""

from __future__ import annotations

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab.errors import UserError
from llmlab.tokenizers import bytelevel
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.bytelevel import from_chars, to_chars, visible
from llmlab.tokenizers.normalizers import NORMALIZERS
from llmlab.tokenizers.pre_tokenizers import CL100K, GPT2, PATTERNS, PreTokenizer

hf = pytest.importorskip("tokenizers")

# The literal patterns of tiktoken's openai_public.py (r50k_base = GPT-2, cl100k_base = GPT-4),
# written out here so the test does not read them from the code under test.
TIKTOKEN_R50K = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# GPT-2's encoder.py, the paper's release:
OPENAI_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
TIKTOKEN_CL100K = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                   r"""|\s*[\r\n]|\s+(?!\S)|\s+""")

SAMPLES = [
    "",
    "Hello world's 123 !!",
    "  two leading spaces, three trailing   ",
    "I'm sure they'll say we've done it, and you'd agree; it's HE'S vs he's",
    "a\n\nb\r\n\r\n  c\t\td",
    "numbers 12345 1234567 3.14 -42 ٣٤٥ ①②",
    "emoji 👨‍👩‍👧‍👦 flags 🇩🇪🇯🇵 done",
    "日本語のテキスト。中文，한국어",
    "e\u0301 combining; nbsp\u00a0and\u3000ideographic; \u2028 line sep; \x00 nul",
    "def f(x):\n    return {'k': x ** 2}  # code\n",
    "!!!???...,,,;;;",
    "שלום עולם مرحبا",
]

# Text that reaches every branch of the patterns: letters, digits, marks, apostrophes,
# spaces of several kinds, CR/LF, punctuation, and any other code point.
TRICKY_CHARS = "aZé日1٣'sStlvrmdD \t\r\n\x0b\x0c\x1c\x85\u00a0\u2028\u3000\u0301!?.,_-"
tricky = st.text(alphabet=st.one_of(st.sampled_from(list(TRICKY_CHARS)), st.characters()), max_size=40)


# ---------------------------------------------------------------------------- pre-tokenizers


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("text", SAMPLES)
def test_chunks_join_back_to_the_input(name: str, text: str) -> None:
    chunks = PreTokenizer.named(name).split(text)
    assert "".join(chunks) == text
    assert all(chunks)  # no empty chunk


@settings(max_examples=150, deadline=None)
@given(text=tricky)
def test_chunks_join_back_to_the_input_random(text: str) -> None:
    for name in PATTERNS:
        assert "".join(PreTokenizer.named(name).split(text)) == text, name


def test_gpt2_splits_by_hand() -> None:
    """GPT-2's rules, worked by hand:

    "Hello world's 123 !!" -> "Hello" | " world" | "'s" | " 123" | " !!"
        a letter run takes one leading space; "'s" is a contraction; digits and punctuation
        runs take one leading space too.
    "a  b" -> "a" | " " | " b"
        \\s+(?!\\S) takes the spaces but the last, which goes with the word.
    "a\\n\\nb" -> "a" | "\\n" | "\\n" | "b"
        "\\n\\n" before "b": \\s+(?!\\S) gives "\\n", then the last "\\n" alone (\\s+); letters take
        only a space, never a newline.
    "x   " -> "x" | "   "   trailing whitespace is one chunk.
    """
    gpt2 = PreTokenizer.named("gpt2")
    assert gpt2.split("Hello world's 123 !!") == ["Hello", " world", "'s", " 123", " !!"]
    assert gpt2.split("a  b") == ["a", " ", " b"]
    assert gpt2.split("a\n\nb") == ["a", "\n", "\n", "b"]
    assert gpt2.split("x   ") == ["x", "   "]
    assert gpt2.split("HE'S") == ["HE", "'", "S"]  # contractions are case-sensitive in GPT-2
    assert gpt2.split("abc123") == ["abc", "123"]


def test_cl100k_splits_by_hand() -> None:
    """cl100k: digits in groups of at most 3, case-insensitive contractions, newlines apart.

    "12345" -> "123" | "45";  "HE'S" -> "HE" | "'S";  "a\\n\\nb" -> "a" | "\\n\\n" | "b"
    (\\s*[\\r\\n]+ keeps the newlines together); "(x" -> "(x" (one non-letter may lead letters).
    """
    cl = PreTokenizer.named("cl100k")
    assert cl.split("12345") == ["123", "45"]
    assert cl.split("1234567") == ["123", "456", "7"]
    assert cl.split("HE'S") == ["HE", "'S"]
    assert cl.split("a\n\nb") == ["a", "\n\n", "b"]
    assert cl.split("f(x)") == ["f", "(x", ")"]
    assert cl.split("Hello world's 123 !!") == ["Hello", " world", "'s", " ", "123", " !!"]


def test_digits_and_whitespace_by_hand() -> None:
    """digits: every digit its own chunk, with no space attached; whitespace: runs only."""
    assert PreTokenizer.named("digits").split("x 2024!") == ["x", " ", "2", "0", "2", "4", "!"]
    assert PreTokenizer.named("whitespace").split("a b\t\t c\n") == ["a", " ", "b", "\t\t ", "c", "\n"]
    # words: a word is the same chunk after a space, a newline or nothing; digits in groups of 3
    assert PreTokenizer.named("words").split("Is 21 or 12345 red?\nred's") == [
        "Is", " ", "21", " ", "or", " ", "123", "45", " ", "red", "?", "\n", "red", "'", "s"]


@pytest.mark.parametrize("text", SAMPLES)
def test_gpt2_and_cl100k_equal_the_published_patterns(text: str) -> None:
    assert PreTokenizer.named("gpt2").split(text) == regex.findall(TIKTOKEN_R50K, text)
    assert PreTokenizer.named("gpt2").split(text) == regex.findall(OPENAI_GPT2, text)
    assert PreTokenizer.named("cl100k").split(text) == regex.findall(TIKTOKEN_CL100K, text)


@settings(max_examples=200, deadline=None)
@given(text=tricky)
def test_gpt2_and_cl100k_equal_the_published_patterns_random(text: str) -> None:
    assert PreTokenizer.named("gpt2").split(text) == regex.findall(TIKTOKEN_R50K, text)
    assert PreTokenizer.named("cl100k").split(text) == regex.findall(TIKTOKEN_CL100K, text)


def _hf_split(pattern: str, text: str) -> list[str]:
    split = hf.pre_tokenizers.Split(hf.Regex(pattern), behavior="isolated")
    return [piece for piece, _ in split.pre_tokenize_str(text)]


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(sorted(set("".join(SAMPLES)) | set(TRICKY_CHARS))), max_size=40))
def test_patterns_split_like_hf_tokenizers(text: str) -> None:
    """The same patterns in HF's regex engine (Oniguruma) give the same chunks.

    On characters both engines' Unicode versions know: they differ on recently assigned
    ones (e.g. U+3D000 is a letter to `regex`, not to HF), which is no fault of ours.
    """
    for name in PATTERNS:
        assert PreTokenizer.named(name).split(text) == _hf_split(PATTERNS[name], text), name


def test_hf_byte_level_uses_the_gpt2_pattern() -> None:
    """HF's ByteLevel(use_regex=True) is GPT-2's split followed by the byte map."""
    byte_level = hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    for text in SAMPLES:
        ours = [to_chars(c.encode("utf-8")) for c in PreTokenizer.named("gpt2").split(text)]
        assert ours == [piece for piece, _ in byte_level.pre_tokenize_str(text)], text


def test_named_and_from_pattern() -> None:
    assert PreTokenizer.named("gpt2").pattern == GPT2
    assert PreTokenizer.from_pattern(CL100K).name == "cl100k"
    assert PreTokenizer.from_pattern(r"\w+|\W+").name == "custom"
    assert PreTokenizer.from_pattern(r"\w+|\W+").split("ab, c") == ["ab", ", ", "c"]


def test_unknown_pre_tokenizer_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"unknown pre-tokenizer 'bert'; choose one of gpt2, cl100k"):
        PreTokenizer.named("bert")
    with pytest.raises(UserError, match="unknown pre-tokenizer"):
        train_bpe(["hello"], vocab_size=300, pre_tokenizer="bert")


# ---------------------------------------------------------------------------- normalizers


def test_normalizers_by_hand() -> None:
    """NFC composes e + U+0301 into é (2 code points -> 1); NFKC also folds compatibility
    characters: the ligature ﬁ -> "fi", full-width Ａ -> "A", ½ -> "1⁄2"; lowercase maps
    each character alone, so a final capital sigma becomes σ, not ς (as HF does)."""
    assert NORMALIZERS["none"]("e\u0301ﬁ") == "e\u0301ﬁ"
    assert NORMALIZERS["nfc"]("e\u0301") == "é"
    assert NORMALIZERS["nfc"]("ﬁ") == "ﬁ"  # NFC keeps compatibility characters
    assert NORMALIZERS["nfkc"]("ﬁ") == "fi"
    assert NORMALIZERS["nfkc"]("Ａ½") == "A1⁄2"
    assert NORMALIZERS["nfkc"]("e\u0301") == "é"
    assert NORMALIZERS["lowercase"]("HeLLo ÄÖÜ") == "hello äöü"
    assert NORMALIZERS["lowercase"]("ΑΣ") == "ασ"


@pytest.mark.parametrize("name, hf_normalizer", [("nfc", "NFC"), ("nfkc", "NFKC"), ("lowercase", "Lowercase")])
def test_normalizers_match_hf(name: str, hf_normalizer: str) -> None:
    """Against HF's normalizers on hand strings (not on random code points: Python and HF
    ship different Unicode versions, which differ on recently assigned characters)."""
    norm = getattr(hf.normalizers, hf_normalizer)()
    for text in [*SAMPLES, "ΑΣ ΣΑΣ Ὀδυσσεύς İstanbul ẞ ǅ Ǆ", "ﬁ ﬂ ＡＢＣ１２３ ½ ™ ㎏", "a\u0308 o\u0302\u0323 Å"]:
        assert NORMALIZERS[name](text) == norm.normalize_str(text), text


def test_normalizer_runs_before_encoding() -> None:
    """Decoding returns the normalized text: the trade the normalizer makes."""
    tok = BPETokenizer.from_merges([], normalizer="nfkc")
    assert tok.decode(tok.encode("ﬁne")) == "fine"
    assert BPETokenizer.from_merges([], normalizer="lowercase").decode(
        BPETokenizer.from_merges([], normalizer="lowercase").encode("ABC")) == "abc"


def test_unknown_normalizer_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"unknown normalizer 'nfd'; choose one of none, nfc, nfkc, lowercase"):
        BPETokenizer.from_merges([], normalizer="nfd")
    with pytest.raises(UserError, match="unknown normalizer 'nfd'"):
        train_bpe(["hello"], vocab_size=300, normalizer="nfd")


# ---------------------------------------------------------------------------- the byte map


def test_byte_map_is_256_distinct_printable_characters() -> None:
    chars = list(bytelevel.BYTE_TO_CHAR.values())
    assert sorted(bytelevel.BYTE_TO_CHAR) == list(range(256))
    assert len(set(chars)) == 256
    assert all(c.isprintable() and not c.isspace() for c in chars)
    assert {bytelevel.CHAR_TO_BYTE[c] for c in chars} == set(range(256))


def test_byte_map_by_hand() -> None:
    """Printable Latin-1 stands for itself; the 68 others shift to U+0100 up, in byte order:
    0x00 -> U+0100 "Ā", 0x0A (newline) -> U+010A "Ċ", 0x20 (space, the 33rd) -> U+0120 "Ġ",
    0x7F -> U+0121 "ġ", 0xAD (soft hyphen, the last) -> U+0143 "Ń"."""
    assert to_chars(b" ") == "Ġ"
    assert to_chars(b"\n") == "Ċ"
    assert to_chars(b"\x00") == "Ā"
    assert to_chars(b"\x7f") == "ġ"
    assert to_chars(b"\xad") == "Ń"
    assert to_chars(b" the") == "Ġthe"
    assert to_chars("é".encode()) == "Ã©"
    assert from_chars("Ġthe") == b" the"
    with pytest.raises(KeyError):
        from_chars("€")


def test_byte_map_matches_hf() -> None:
    assert set(bytelevel.BYTE_TO_CHAR.values()) == set(hf.pre_tokenizers.ByteLevel.alphabet())
    byte_level = hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    text = "héllo\n\twörld 日本 🙂\x00\x7f"
    assert byte_level.pre_tokenize_str(text)[0][0] == to_chars(text.encode("utf-8"))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=64))
def test_to_chars_and_from_chars_are_inverse(data: bytes) -> None:
    assert from_chars(to_chars(data)) == data
    assert len(to_chars(data)) == len(data)


def test_hf_byte_order_is_a_permutation_and_hf_vocab_order() -> None:
    """HF's BpeTrainer numbers the 256 byte characters in code point order: "!" (0x21) is
    first, then the printable ASCII, ..., and "Ġ" (space) comes after every printable Latin-1."""
    assert sorted(bytelevel.HF_BYTE_ORDER) == list(range(256))
    assert bytelevel.HF_BYTE_ORDER[ord("!")] == 0
    assert bytelevel.HF_BYTE_ORDER[ord("a")] < bytelevel.HF_BYTE_ORDER[0xFF] < bytelevel.HF_BYTE_ORDER[ord(" ")]
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = hf.trainers.BpeTrainer(vocab_size=256, initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
                                     show_progress=False)
    tok.train_from_iterator(["a"], trainer)
    vocab = tok.get_vocab()
    assert [vocab[to_chars(bytes([b]))] for b in range(256)] == bytelevel.HF_BYTE_ORDER


def test_visible_by_hand() -> None:
    assert visible(b" the") == "␣the"
    assert visible("日本".encode()) == "日本"
    assert visible(b"\n") == "<0x0A>"
    assert visible(b"a\tb") == "a<0x09>b"
    assert visible(b"\xe6") == "<0xE6>"  # a partial character: bytes, not U+FFFD
    assert visible(b"ab\xff") == "ab<0xFF>"
