"""Fuzzing every llmlab tokenizer kind with hypothesis (the issue "Security and reliability").

Each property runs twice: 200 examples in the default suite, 10,000 under `-m slow`
(`pytest -m slow tests/tokenizers/test_fuzz.py`). The tokenizers are trained once per module
on a few thousand characters of mixed scripts, emoji and code, with llmlab's chat specials.

What holds for which kind (`decode(encode(s))`, the text that comes back):

    kind          model                              decode(encode(s))
    bpe-gpt2      byte-level BPE, GPT-2 split        s
    bpe-cl100k    byte-level BPE, cl100k split       s
    unigram       Unigram, byte fallback, no norm.   s with "▁" as " " (SentencePiece's space: by design)
    unigram-nfkc  the same with NFKC (CLI default)   NFKC(s) with "▁" as " "
    wordpiece     BERT WordPiece                     lossy by design; see `check_wordpiece_text`

and for every kind, on any text without lone surrogates:
  - no special id comes out of `encode(s)` (WordPiece's [UNK] stands for unknown words, so it may);
  - with `allowed_special="all"` the special ids are exactly those of the specials' texts in s,
    longest match first, left to right (an oracle: one `re` alternation);
  - the saved tokenizer.json, loaded back by `load_tokenizer`, gives the same ids; HF `tokenizers`
    loading the same file gives llmlab's ids with every special allowed (HF always matches added
    tokens in text), where both sides' Unicode tables agree on the text.
Lone surrogates ("a\\ud800b": no UTF-8 form) are refused with a one-line UserError on every
encode path, instead of an exception from deep inside or a silent drop (WordPiece dropped them).

The chat paths (chat / generate --chat, SFT / DPO rendering; llmlab's format and an HF Jinja
template with transformers) reuse tests/test_security.py: its property at 10,000 examples, and
its fixtures and helpers for the same check on contents from every plane. Without torch or
transformers (test_security not importable) those tests are skipped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab.data.chat import CHAT_SPECIALS
from llmlab.errors import UserError
from llmlab.tokenizers.base import SpecialTokenError, Tokenizer
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.hf_io import load_tokenizer
from llmlab.tokenizers.normalizers import nfkc
from llmlab.tokenizers.unigram_train import train_unigram
from llmlab.tokenizers.wordpiece import DEFAULT_SPECIAL_TOKENS, WordPieceTokenizer
from llmlab.tokenizers.wordpiece_train import train_wordpiece

try:
    import tokenizers as hf_tokenizers
except ImportError:  # HF `tokenizers` is optional: its comparisons are skipped
    hf_tokenizers = None

EXAMPLES = [200, pytest.param(10_000, marks=pytest.mark.slow)]

CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog; it's 12:45, isn't it? " * 2,
    "日本語のテキスト、中文字符和标点。한국어 문장입니다. ｶﾀｶﾅ",
    "مرحبا بالعالم، كيف حالك؟ שלום עולם, מה שלומך?",
    "Привет, мир! Ελληνικά κείμενα. Ünïcödé café naïve façade straße ǅ ﬁ ½",
    "emoji 👍🏽 family 👨‍👩‍👧‍👦 flags 🇩🇪🇯🇵 robot 🤖 rainbow 🏳️‍🌈 e\u0301 a\u0308",
    "def f(x):\n    return {'k': [x ** 2, x // 3]}  # code\n\tif x != 0: print(f\"{x!r}\")\n",
    "<html><a href='#'>link</a></html> $5.00 + 3^2 = `x` | y ~ z 50% user@example.com",
    "numbers 12345 3.14159 -42 ٣٤٥ ①② and\nnew\r\nlines\n\n  indented   spaces\u00a0nbsp",
]
CORPUS = [doc for _ in range(8) for doc in CORPUS]  # about 5,000 characters: pairs repeat, merges exist


# ---------------------------------------------------------------------- the tokenizers


@dataclass(frozen=True)
class Case:
    """A trained tokenizer, the same loaded back from its tokenizer.json, and what to expect of it."""

    tok: Tokenizer
    loaded: Tokenizer
    hf: Any  # tokenizers.Tokenizer of the same file, or None without HF `tokenizers`
    decoded: Callable[[str], str] | None  # the text decode(encode(s)) gives; None: WordPiece's weaker property
    unk: str | None = None  # the special that stands for unknown text (WordPiece's [UNK])
    hf_ids_comparable: Callable[[str], bool] = lambda text: True  # both Unicode tables agree on text

    @property
    def text_specials(self) -> dict[str, int]:
        """The specials only a special's text (when allowed) may produce."""
        return {s: i for s, i in self.tok.special_tokens.items() if s != self.unk}


def unigram_decoded(text: str) -> str:
    return text.replace("\u2581", " ")  # "▁" is SentencePiece's space, in text too (HF decodes it alike)


TRAIN: dict[str, Callable[[], Tokenizer]] = {
    "bpe-gpt2": lambda: train_bpe(CORPUS, vocab_size=420, special_tokens=CHAT_SPECIALS),
    "bpe-cl100k": lambda: train_bpe(CORPUS, vocab_size=420, special_tokens=CHAT_SPECIALS, pre_tokenizer="cl100k"),
    "unigram": lambda: train_unigram(CORPUS, 520, byte_fallback=True, normalizer="none",
                                     special_tokens=CHAT_SPECIALS),
    "unigram-nfkc": lambda: train_unigram(CORPUS, 520, byte_fallback=True, special_tokens=CHAT_SPECIALS),
    "wordpiece": lambda: train_wordpiece(CORPUS, 400, min_frequency=1,
                                         special_tokens=[*DEFAULT_SPECIAL_TOKENS, *CHAT_SPECIALS]),
}
DECODED: dict[str, Callable[[str], str] | None] = {
    "bpe-gpt2": lambda text: text, "bpe-cl100k": lambda text: text,
    "unigram": unigram_decoded, "unigram-nfkc": lambda text: unigram_decoded(nfkc(text)), "wordpiece": None,
}
KINDS = list(TRAIN)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    out = {}
    for kind, train in TRAIN.items():
        tok = train()
        folder: Path = tmp_path_factory.mktemp(kind)
        tok.save(folder)
        hf = hf_tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")) if hf_tokenizers else None
        comparable = {"unigram-nfkc": lambda text: unicodedata.is_normalized("NFKC", text)}.get(kind, lambda text: True)
        out[kind] = Case(tok, load_tokenizer(folder), hf, DECODED[kind],
                         unk="[UNK]" if isinstance(tok, WordPieceTokenizer) else None, hf_ids_comparable=comparable)
    return out


def test_the_fixtures_are_what_the_docstring_says(cases: dict[str, Case]) -> None:
    assert {type(c.tok).__name__ for c in cases.values()} == {"BPETokenizer", "UnigramTokenizer",
                                                               "WordPieceTokenizer"}
    for case in cases.values():
        assert set(CHAT_SPECIALS) <= set(case.tok.special_tokens)
        assert type(case.loaded) is type(case.tok)
    assert cases["unigram-nfkc"].tok.normalizer == "nfkc" and cases["unigram"].tok.normalizer == "none"


# ---------------------------------------------------------------------- strategies

ANY_CHAR = st.characters(codec="utf-8")  # every plane; no lone surrogates (they have no UTF-8)
SPECIAL_TEXTS = sorted({*CHAT_SPECIALS, *DEFAULT_SPECIAL_TOKENS, "<unk>"})
# specials, their halves and their tails, so that adjacent pieces make (or nearly make) a special
FRAGMENTS = sorted({s[:k] for s in SPECIAL_TEXTS for k in range(1, len(s))}
                   | {s[k:] for s in SPECIAL_TEXTS for k in range(1, len(s))})
PIECES = [
    "hello", " world", "日本語", "中文", "한국어", "def f(x):", "    ", "'s", "12345", "don't", "do not",
    "שלום", "مرحبا", "\u200f", "\u202e", "\u061c",  # RTL: words, RLM, RLO, Arabic letter mark
    "👨\u200d👩\u200d👧\u200d👦", "🏳\ufe0f\u200d🌈", "👍🏽", "🇩🇪", "\u200d", "\ufe0f",  # emoji ZWJ sequences
    "e\u0301", "a\u0308\u0323", "\u0301", "ﬁ", "½", "Ǆ", "İ", "ß", "Σ",  # combining marks, NFKC and case folds
    "\u2581", "▁▁", "\ufffd", "\x00", "\u00ad", "\ufeff", "##", "[", "]",  # SentencePiece space, odd ones
]
WHITESPACE = st.text(st.sampled_from(" \t\n\r\x0b\x0c\x1c\x85\u00a0\u1680\u2000\u2028\u2029\u202f\u3000"),
                     min_size=1, max_size=6)
MARKS = st.text(st.characters(categories=("Mn", "Mc", "Me")), min_size=1, max_size=4)
fuzz_text = st.one_of(
    st.text(ANY_CHAR, max_size=80),
    st.lists(st.one_of(st.sampled_from(SPECIAL_TEXTS), st.sampled_from(FRAGMENTS), st.sampled_from(PIECES),
                       WHITESPACE, MARKS, st.text(ANY_CHAR, max_size=4)), max_size=16).map("".join),
)


def hold(examples: int, check: Callable[..., None], **strategies: st.SearchStrategy) -> None:
    """Run `check` as a hypothesis property for `examples` examples (one body, two sizes)."""
    settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
        given(**strategies)(check))()


# ---------------------------------------------------------------------- text round trips and specials


def specials_oracle(specials: dict[str, int]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))


def check_text(case: Case, text: str) -> None:
    tok = case.tok
    ids = tok.encode(text)
    special_ids = set(case.text_specials.values())
    assert not special_ids & set(ids), "a special id from user text"
    assert case.loaded.encode(text) == ids
    if case.decoded is not None:
        assert tok.decode(ids) == case.decoded(text)
    else:
        check_wordpiece_text(tok, text, ids)

    allowed = tok.encode(text, allowed_special="all")
    expected = [case.text_specials[m] for m in specials_oracle(case.text_specials).findall(text)]
    assert [i for i in allowed if i in special_ids] == expected
    assert case.loaded.encode(text, allowed_special="all") == allowed
    if case.decoded is not None and not expected:
        assert allowed == ids
    if case.hf is not None:
        if case.hf_ids_comparable(text):
            assert case.hf.encode(text, add_special_tokens=False).ids == allowed
        assert case.hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)


def check_wordpiece_text(tok: WordPieceTokenizer, text: str, ids: list[int]) -> None:
    """WordPiece's weaker property, since BERT's pipeline lowercases, strips accents and drops spaces:

    encode never raises, and when no word became [UNK] the pieces (without "##") spell llmlab's
    BertNormalizer(text) less its whitespace. (decode(ids) itself adds spaces between words and
    rewrites " do not" as " don't", as HF's decoder does; that it equals HF's decode of the same
    ids is checked in `check_text`.)
    """
    if tok.unk_id not in ids:
        spelled = "".join(tok.token_bytes(i).decode("utf-8") for i in ids)
        assert spelled == regex.sub(r"\p{White_Space}+", "", tok.normalizer(text))


@pytest.mark.parametrize("examples", EXAMPLES)
@pytest.mark.parametrize("kind", KINDS)
def test_any_text_round_trips_and_never_becomes_special(kind: str, examples: int, cases: dict[str, Case]) -> None:
    hold(examples, lambda text: check_text(cases[kind], text), text=fuzz_text)


@pytest.mark.parametrize("kind", KINDS)
def test_each_special_text_is_special_only_when_allowed(kind: str, cases: dict[str, Case]) -> None:
    tok = cases[kind].tok
    for special, i in tok.special_tokens.items():
        assert tok.encode(special, allowed_special={special}) == [i]
        assert tok.encode(special, allowed_special=special) == [i]  # one token, not its characters
        assert i not in tok.encode(special)
        assert tok.encode(f"a{special}b", allowed_special="all").count(i) == 1
        with pytest.raises(SpecialTokenError, match=re.escape(repr(special))):
            tok.encode(f"x {special}", disallowed_special="raise")


def test_hand_examples(cases: dict[str, Case]) -> None:
    """A few texts worked by hand, so that the properties above are not vacuous."""
    bpe, uni = cases["bpe-gpt2"].tok, cases["unigram"].tok
    eot = bpe.special_tokens["<|endoftext|>"]
    assert bpe.encode("<|endoftext|>", allowed_special="all") == [eot]
    assert eot not in bpe.encode("<|endoftext|>") and bpe.decode(bpe.encode("<|endoftext|>")) == "<|endoftext|>"
    assert bpe.decode(bpe.encode("a<|end|>b", allowed_special="all")) == "a<|end|>b"
    assert uni.decode(uni.encode("a\u2581b")) == "a b"  # SentencePiece's space stays a space
    assert cases["unigram-nfkc"].tok.decode(cases["unigram-nfkc"].tok.encode("ﬁ½")) == "fi1⁄2"
    wp = cases["wordpiece"].tok
    assert wp.decode(wp.encode("Héllo, WORLD!")) == "hello, world!"


# ---------------------------------------------------------------------- lone surrogates

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


def check_surrogate_refused(case: Case, before: str, surrogate: str, after: str) -> None:
    text = before + surrogate + after
    for encode in (case.tok.encode, case.tok.encode_ordinary, case.loaded.encode,
                   lambda t: case.tok.encode(t, allowed_special="all")):
        with pytest.raises(UserError, match="lone surrogate") as info:
            encode(text)
        assert "\n" not in str(info.value)
        assert f"at character {len(before)}" in str(info.value)


@pytest.mark.parametrize("examples", EXAMPLES)
@pytest.mark.parametrize("kind", KINDS)
def test_lone_surrogates_are_refused_cleanly(kind: str, examples: int, cases: dict[str, Case]) -> None:
    """Hypothesis's text strategies never make lone surrogates; this one puts one in any text."""
    hold(examples, lambda before, surrogate, after: check_surrogate_refused(cases[kind], before, surrogate, after),
         before=fuzz_text, surrogate=SURROGATES, after=st.text(st.characters(), max_size=20))


@pytest.mark.parametrize("kind", KINDS)
def test_lone_surrogate_by_hand(kind: str, cases: dict[str, Case]) -> None:
    with pytest.raises(UserError, match=r"lone surrogate '\\ud800' at character 1"):
        cases[kind].tok.encode("a\ud800b")


# ---------------------------------------------------------------------- the chat paths

try:  # tests/test_security.py's property, helpers and fixtures (module-scoped: built once here too)
    from conftest import one_thread
    from test_security import chat_tokenizers, folders, llmlab_tokenizers, specials_in  # noqa: F401 (fixtures)
    from test_security import test_any_content_keeps_the_template_specials_only as security_property
except ImportError as e:  # e.g. without torch or transformers
    security_property = specials_in = one_thread = None
    SECURITY_MISSING = f"tests/test_security.py is not importable: {e}"
else:
    SECURITY_MISSING = ""
needs_security = pytest.mark.skipif(security_property is None, reason=SECURITY_MISSING)


@pytest.mark.slow
@needs_security
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_content_keeps_the_template_specials_only_10k(data: st.DataObject, folders: dict,
                                                          llmlab_tokenizers: dict,
                                                          chat_tokenizers: dict) -> None:
    """test_security's property (60 examples there) at 10,000: contents made of specials' texts and
    their fragments, on chat_prompt_ids (chat, generate --chat: llmlab's format and an HF Jinja
    template) and ChatTokenizer.render_prompt (SFT and DPO prompts; transformers for the HF folder)."""
    with one_thread():
        security_property.hypothesis.inner_test(data, folders, llmlab_tokenizers, chat_tokenizers)


def check_chat_content(content: str, folders: dict, llmlab_tokenizers: dict, chat_tokenizers: dict) -> None:
    """Any content, every plane: the specials are the template's, on the chat and SFT/DPO paths."""
    from llmlab.align.data import render_chat
    from llmlab.model import commands

    prompt = [{"role": "user", "content": content}]
    for kind in ("llmlab", "hf"):
        tok, chat_tok = llmlab_tokenizers[kind], chat_tokenizers[kind]
        user, end, assistant = (tok.special_tokens[s] for s in ("<|user|>", "<|end|>", "<|assistant|>"))
        ids = commands.chat_prompt_ids(tok, prompt, str(folders[kind]))
        assert specials_in(ids, tok) == [user, end, assistant]
        assert tok.decode(ids) == f"<|user|>\n{content}<|end|>\n<|assistant|>\n"
        assert chat_tok.render_prompt(prompt) == ids
        sft, mask = render_chat(chat_tok, [*prompt, {"role": "assistant", "content": content}])
        assert specials_in(sft, tok) == [user, end, assistant, end]
        assert tok.decode([i for i, m in zip(sft, mask, strict=True) if m]) == f"{content}<|end|>"


@needs_security
@pytest.mark.parametrize("examples", EXAMPLES)
def test_any_content_in_every_plane_keeps_the_template_specials_only(
        examples: int, folders: dict, llmlab_tokenizers: dict, chat_tokenizers: dict) -> None:
    with one_thread():
        hold(examples, lambda content: check_chat_content(content, folders, llmlab_tokenizers, chat_tokenizers),
             content=fuzz_text)


def test_subword_sampling_refuses_lone_surrogates_too() -> None:
    """encode_sample (Unigram's subword regularisation) takes the same check as encode."""
    from llmlab.errors import UserError
    from llmlab.tokenizers.unigram_train import train_unigram

    tok = train_unigram(["the quick brown fox jumps over the lazy dog"] * 20, vocab_size=60)
    with pytest.raises(UserError, match="lone surrogate"):
        tok.encode_sample("a\ud800b", seed=0)
