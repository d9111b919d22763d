"""The BPE trainer: hand-worked merges, fast == textbook oracle, parity with HF BpeTrainer.

Ground truth, three ways:
  - merges worked out by hand in the docstrings (ties included: `tie_key` is HF's
    byte-level vocabulary order, printable bytes by character, " " = "Ġ" after all of them,
    merged tokens after every byte, by creation);
  - the textbook recount trainer (`learn_merges_reference`) on random corpora;
  - HF `tokenizers`' BpeTrainer on the same words, which must give the same merges exactly.
    Most merge steps of a small corpus are ties (the top two pairs have equal counts), so
    equality there means the tie rule is HF's, not luck; the parity tests count them.
"""

from __future__ import annotations

import heapq
import json
import random
import tempfile
from collections import Counter, defaultdict
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.errors import UserError
from llmlab.tokenizers.bpe_reference import learn_merges_reference
from llmlab.tokenizers.bpe_train import count_words, iter_file_blocks, learn_merges, tie_key, train_bpe
from llmlab.tokenizers.bytelevel import from_chars
from llmlab.tokenizers.pre_tokenizers import PATTERNS, PreTokenizer

hf = pytest.importorskip("tokenizers")

Merges = list[tuple[bytes, bytes]]


# ---------------------------------------------------------------------------- corpora


@cache
def task_world(chars: int) -> tuple[str, ...]:
    return tuple(pretrain_documents(GenerateConfig(kind="pretrain", chars=chars)))


PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog. It's not the fox's fault that the dog won't move; "
    "they'll say we've tried everything, and I'd agree.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Größere Straßen führen nach München, "
    "und die Bäume blühen früh im Frühling.",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο. Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "素早い茶色の狐がのろまな犬を飛び越える。東京は日本の首都です。今日はいい天気ですね。",
    "def fibonacci(n: int) -> list[int]:\n    a, b = 0, 1\n    out = []\n    for _ in range(n):\n"
    "        out.append(a)\n        a, b = b, a + b\n    return out\n",
]
SYLLABLES = {  # space-separated, split below
    "en": "th er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le ve co me de hi",
    "de": "ch ei ie en er sch un ge de be ü ö ä ß st au ng ich lich keit",
    "el": "το να κα πα τα με ση ει ου αι ρο λο νη θε γι ώ ή ά ί ό",
    "ja": " ".join("のにはをがでとしたてるかいうすまなこれそあ日本東京語人時間学生"),
}


def _word(rng: random.Random, lang: str) -> str:
    syllables = SYLLABLES[lang].split(" ")
    return "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))


def _code(rng: random.Random) -> str:
    name, arg = _word(rng, "en"), _word(rng, "en")
    return (f"def {name}_{rng.randint(0, 99)}({arg}: int = {rng.randint(0, 9999)}) -> str:\n"
            f"    if {arg} > {rng.randint(1, 500)}:\n        return f\"{{{arg}!r}}\"  # {_word(rng, 'en')}\n"
            f"    return str({arg} * {rng.random():.3f})\n")


@cache
def mixed_corpus(n_docs: int = 1000, seed: int = 0) -> tuple[str, ...]:
    """English, German, Greek, Japanese and Python, repeated with variations (~340 kB).

    Each document: one fixed paragraph, made-up sentences in two languages from per-language
    syllables (so there are thousands of distinct words), and a generated Python function.
    """
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        parts = [rng.choice(PARAGRAPHS)]
        for lang in rng.sample(sorted(SYLLABLES), 2):
            sep, end = ("", "。") if lang == "ja" else (" ", ".")
            parts.append(sep.join(_word(rng, lang) for _ in range(rng.randint(5, 15))) + end)
        parts.append(_code(rng))
        rng.shuffle(parts)
        docs.append("\n".join(parts))
    return tuple(docs)


# ---------------------------------------------------------------------------- helpers


def hf_merges(docs: tuple[str, ...] | list[str], vocab_size: int, *, pattern: str | None,
              min_frequency: int = 2, special_tokens: tuple[str, ...] = ()) -> Merges:
    """HF BpeTrainer's merges, as bytes. `pattern=None`: each document is one word."""
    tok = hf.Tokenizer(hf.models.BPE())
    byte_level = hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.pre_tokenizer = byte_level if pattern is None else hf.pre_tokenizers.Sequence(
        [hf.pre_tokenizers.Split(hf.Regex(pattern), behavior="isolated"), byte_level])
    trainer = hf.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                     special_tokens=list(special_tokens),
                                     initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(from_chars(part) for part in (m.split(" ") if isinstance(m, str) else m)) for m in merges]


def tie_steps(word_counts: dict[str, int], merges: Merges) -> list[int]:
    """Replay `merges` with pair counts kept up to date; the steps whose top two counts were equal.

    Also checks that every merge took a pair of the highest count (HF's as well as ours).
    A lazy max-heap finds the top two pairs (entries whose count changed are skipped).
    """
    words = [[bytes([b]) for b in w.encode("utf-8")] for w in word_counts]
    freqs = list(word_counts.values())
    counts: Counter[tuple[bytes, bytes]] = Counter()
    where: defaultdict[tuple[bytes, bytes], set[int]] = defaultdict(set)
    for i, (parts, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(parts):
            counts[pair] += f
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)

    def top_two() -> list[int]:
        found: list[tuple[int, tuple[bytes, bytes]]] = []
        while heap and len(found) < 2:
            neg, pair = heapq.heappop(heap)
            if counts.get(pair, 0) == -neg and all(pair != p for _, p in found):
                found.append((neg, pair))
        for entry in found:
            heapq.heappush(heap, entry)
        return [-neg for neg, _ in found]

    ties = []
    for step, best in enumerate(merges):
        top = top_two()
        assert counts[best] == top[0], f"step {step}: {best} has count {counts[best]}, the top is {top[0]}"
        if len(top) == 2 and top[0] == top[1]:
            ties.append(step)
        changed = set()
        for i in where.pop(best):
            parts, f = words[i], freqs[i]
            for pair in pairwise(parts):
                counts[pair] -= f
                changed.add(pair)
            merged, j = [], 0
            while j < len(parts):
                if j < len(parts) - 1 and (parts[j], parts[j + 1]) == best:
                    merged.append(parts[j] + parts[j + 1])
                    j += 2
                else:
                    merged.append(parts[j])
                    j += 1
            words[i] = merged
            for pair in pairwise(merged):
                counts[pair] += f
                where[pair].add(i)
                changed.add(pair)
        for pair in changed:
            if counts[pair] > 0:
                heapq.heappush(heap, (-counts[pair], pair))
            else:
                del counts[pair]
    return ties


def parity(docs: tuple[str, ...], vocab_size: int, pre_tokenizer: str, label: str) -> tuple[Merges, Merges]:
    """llmlab's and HF's merges on `docs`; prints the numbers the report quotes."""
    ours = train_bpe(docs, vocab_size=vocab_size, pre_tokenizer=pre_tokenizer).merges
    theirs = hf_merges(docs, vocab_size, pattern=PATTERNS[pre_tokenizer])
    counts = count_words(docs, pre_tokenizer=PreTokenizer.named(pre_tokenizer))
    ties = tie_steps(counts, theirs)
    ours_set = set(ours)
    covered = sum(m in ours_set for m in theirs) / max(len(theirs), 1)
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
    print(f"parity {label} {pre_tokenizer} V={vocab_size}: {len(counts)} words, HF {len(theirs)} merges, "
          f"llmlab {len(ours)}, ties at {len(ties)} steps, HF merges in llmlab {covered:.1%}, equal={ours == theirs}"
          + ("" if first is None else f", first difference at step {first} (tie: {first in ties}): "
             f"llmlab {ours[first]} HF {theirs[first]}"))
    assert covered >= 0.95
    assert len(ours) == len(theirs) == vocab_size - 256 or len(theirs) < vocab_size - 256
    return ours, theirs


# ---------------------------------------------------------------------------- by hand

HUG = {"hug": 10, "pug": 5, "hugs": 5}


def test_hug_pug_hugs_by_hand() -> None:
    """bpe_reference's docstring, carried to the end:

    step 0  (h,u) 10+5=15  (u,g) 10+5+5=20  (p,u) 5  (g,s) 5      -> (u,g): "ug"
    step 1  (h,ug) 15  (p,ug) 5  (ug,s) 5                          -> (h,ug): "hug"
    step 2  (p,ug) 5  (hug,s) 5                                    a tie at 5:
            tie_key(p) = 79 < tie_key(hug) = 257 (merged tokens come after every byte)
                                                                   -> (p,ug): "pug"
    step 3  (hug,s) 5                                              -> (hug,s): "hugs"
    step 4  no pairs left                                          -> stop
    """
    want = [(b"u", b"g"), (b"h", b"ug"), (b"p", b"ug"), (b"hug", b"s")]
    assert tie_key(ord("p")) == 79
    assert learn_merges(HUG, 10) == want
    assert learn_merges_reference(HUG, 10) == want
    assert hf_merges([w for w, c in HUG.items() for _ in range(c)], 300, pattern=None) == want


def test_ties_follow_hf_vocabulary_order_not_byte_order() -> None:
    """words {"zbc": 2, " a": 2}: every step is a tie at count 2.

    tie_key (HF's byte-level ids): printable ASCII by character from "!" = 0, so
    a = 64, b = 65, c = 66, z = 89; a space is "Ġ" = U+0120, after all printable
    Latin-1: 220. Merged tokens: 256, 257, ... in order. Pairs compare left key, then right.

    step 0  (z,b) (89,65)  (b,c) (65,66)  (" ",a) (220,64)  -> (b,c): "bc" = 256
            (byte order would pick (" ",a): 0x20 is the smallest byte)
    step 1  (z,bc) (89,256)  (" ",a) (220,64)               -> (z,bc): the left key decides
    step 2  (" ",a)                                          -> " a"
    """
    words = {"zbc": 2, " a": 2}
    assert [tie_key(ord(c)) for c in "abcz "] == [64, 65, 66, 89, 220]
    want = [(b"b", b"c"), (b"z", b"bc"), (b" ", b"a")]
    assert learn_merges(words, 10) == want
    assert learn_merges_reference(words, 10) == want
    assert hf_merges(["zbc", "zbc", " a", " a"], 300, pattern=None) == want


def test_merged_tokens_lose_ties_to_bytes() -> None:
    """words {"abcdef": 1}, min_frequency 1: every pair has count 1 at every step.

    step 0  (a,b) (64,65) is the smallest                    -> ab = 256
    step 1  (ab,c) (256,..)  (c,d) (66,67)  (d,e)  (e,f)     -> (c,d): cd = 257
    step 2  (ab,cd) (256,257)  (cd,e) (257,..)  (e,f) (68,69) -> (e,f): ef = 258
    step 3  (ab,cd) (256,257)  (cd,ef) (257,258)             -> abcd
    step 4  (abcd,ef)                                         -> abcdef
    With min_frequency 2 nothing is merged: every pair occurs once.
    """
    want = [(b"a", b"b"), (b"c", b"d"), (b"e", b"f"), (b"ab", b"cd"), (b"abcd", b"ef")]
    assert learn_merges({"abcdef": 1}, 10, min_frequency=1) == want
    assert learn_merges_reference({"abcdef": 1}, 10, min_frequency=1) == want
    assert hf_merges(["abcdef"], 300, pattern=None, min_frequency=1) == want
    assert learn_merges({"abcdef": 1}, 10) == []
    assert learn_merges_reference({"abcdef": 1}, 10) == []


def test_overlapping_pairs_by_hand() -> None:
    """words {"aaaa": 2, "aaa": 3}.

    step 0  (a,a): "aaaa" holds it 3 times (overlapping), "aaa" twice: 3*2 + 2*3 = 12
            merging left to right: a a a a -> aa aa;  a a a -> aa a (not a aa)
    step 1  (aa,aa) 2  (aa,a) 3                 -> (aa,a): "aaa"
    step 2  (aa,aa) 2                           -> (aa,aa): "aaaa"
    With {"aaaa": 1, "aaa": 1} and min_frequency 2: (a,a) = 3 + 2 = 5 is merged, then
    (aa,aa) and (aa,a) are 1 each: stop after one merge.
    """
    want = [(b"a", b"a"), (b"aa", b"a"), (b"aa", b"aa")]
    words = {"aaaa": 2, "aaa": 3}
    assert learn_merges(words, 10) == want
    assert learn_merges_reference(words, 10) == want
    assert hf_merges(["aaaa"] * 2 + ["aaa"] * 3, 300, pattern=None) == want
    assert learn_merges({"aaaa": 1, "aaa": 1}, 10) == [(b"a", b"a")]
    assert learn_merges_reference({"aaaa": 1, "aaa": 1}, 10) == [(b"a", b"a")]


def test_on_merge_reports_each_step_and_count() -> None:
    seen: list[tuple[int, int]] = []
    learn_merges(HUG, 10, on_merge=lambda step, count: seen.append((step, count)))
    assert seen == [(0, 20), (1, 15), (2, 5), (3, 5)]


def test_num_merges_zero_and_one_byte_words() -> None:
    assert learn_merges(HUG, 0) == learn_merges_reference(HUG, 0) == []
    assert learn_merges({"a": 100, "é": 3}, 5) == [(b"\xc3", b"\xa9")]  # é is two bytes: one pair
    assert learn_merges({"a": 100, "b": 3}, 5) == learn_merges_reference({"a": 100, "b": 3}, 5) == []


# ---------------------------------------------------------------------------- fast == oracle

ALPHABET = ["a", "b", "c", " ", "\n", "é", "日", "🙂", "ab"]
word_counts = st.dictionaries(
    keys=st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=8).map("".join),
    values=st.integers(1, 20), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(words=word_counts, num_merges=st.integers(0, 60), min_frequency=st.integers(1, 3))
def test_fast_equals_reference_random(words: dict[str, int], num_merges: int, min_frequency: int) -> None:
    fast = learn_merges(words, num_merges, min_frequency=min_frequency)
    assert fast == learn_merges_reference(words, num_merges, min_frequency=min_frequency)
    assert len(fast) <= num_merges


@settings(max_examples=100, deadline=None)
@given(words=word_counts, num_merges=st.integers(0, 60), min_frequency=st.integers(1, 3))
def test_fast_equals_hf_random(words: dict[str, int], num_merges: int, min_frequency: int) -> None:
    """HF sees each word as one pre-tokenized word (ByteLevel without its regex)."""
    docs = [w for w, c in words.items() for _ in range(c)]
    theirs = hf_merges(docs, 256 + num_merges, pattern=None, min_frequency=min_frequency)
    assert learn_merges(words, num_merges, min_frequency=min_frequency) == theirs


def test_fast_equals_reference_on_task_world_100k() -> None:
    counts = count_words(task_world(100_000), pre_tokenizer=PreTokenizer.named("gpt2"))
    fast = learn_merges(counts, 300)
    assert len(fast) == 300
    assert fast == learn_merges_reference(counts, 300)


# ---------------------------------------------------------------------------- HF parity


def test_hf_parity_task_world_100k() -> None:
    """The default run's parity check: 744 merges, most of them at ties, all equal to HF's."""
    ours, theirs = parity(task_world(100_000), 1000, "gpt2", "task-world-100k")
    assert ours == theirs


@pytest.mark.parametrize("min_frequency", [1, 3])
def test_hf_parity_min_frequency(min_frequency: int) -> None:
    docs = task_world(30_000)
    ours = train_bpe(docs, vocab_size=3000, min_frequency=min_frequency).merges
    assert ours == hf_merges(docs, 3000, pattern=PATTERNS["gpt2"], min_frequency=min_frequency)


def test_hf_parity_with_special_tokens() -> None:
    """HF counts special tokens in vocab_size too: 600 - 256 - 2 = 342 merges."""
    docs = task_world(30_000)
    specials = ("<|endoftext|>", "<|pad|>")
    tok = train_bpe(docs, vocab_size=600, special_tokens=specials)
    assert len(tok.merges) == 342
    assert tok.merges == hf_merges(docs, 600, pattern=PATTERNS["gpt2"], special_tokens=specials)


@pytest.mark.slow
@pytest.mark.parametrize("pre_tokenizer", ["gpt2", "cl100k"])
@pytest.mark.parametrize("vocab_size", [1000, 3000])
@pytest.mark.parametrize("corpus", ["task-world-300k", "mixed"])
def test_hf_parity_slow(corpus: str, vocab_size: int, pre_tokenizer: str) -> None:
    docs = task_world(300_000) if corpus == "task-world-300k" else mixed_corpus()
    ours, theirs = parity(docs, vocab_size, pre_tokenizer, corpus)
    assert ours == theirs


# ---------------------------------------------------------------------------- vocab size


def test_vocab_size_accounting_rich_corpus() -> None:
    """256 bytes + merges + specials == vocab_size; specials come last, in order."""
    specials = ["<|endoftext|>", "<|im_start|>"]
    tok = train_bpe(task_world(30_000), vocab_size=700, special_tokens=specials)
    assert len(tok.merges) == 700 - 256 - 2
    assert tok.vocab_size == 700
    assert tok.special_tokens == {"<|endoftext|>": 698, "<|im_start|>": 699}


def test_fewer_merges_when_pairs_run_out() -> None:
    """"ab ab ab": words "ab" 1, " ab" 2; (a,b) 3 -> ab, (" ",ab) 2 -> " ab", then no pair is left."""
    tok = train_bpe(["ab ab ab"], vocab_size=1000)
    assert tok.merges == [(b"a", b"b"), (b" ", b"ab")]
    assert tok.vocab_size == 258
    # below min_frequency: every pair of "abcdef" occurs once
    assert train_bpe(["abcdef"], vocab_size=1000).merges == []
    assert len(train_bpe(["abcdef"], vocab_size=1000, min_frequency=1).merges) == 5
    # exactly 256 + specials: no merges, not an error
    assert train_bpe(["ab ab ab"], vocab_size=257, special_tokens=["<|x|>"]).vocab_size == 257


@pytest.mark.parametrize("texts", [[], [""], ["", ""]])
def test_empty_corpus_is_a_user_error(texts: list[str]) -> None:
    with pytest.raises(UserError, match="the training corpus is empty"):
        train_bpe(texts, vocab_size=300)


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"vocab size 256 is smaller than 256 bytes \+ 1 special tokens = 257"):
        train_bpe(["hello"], vocab_size=256, special_tokens=["<|endoftext|>"])
    with pytest.raises(UserError, match="vocab size 100 is smaller than 256 bytes"):
        train_bpe(["hello"], vocab_size=100)
    with pytest.raises(UserError, match="a special token is the empty string"):
        train_bpe(["hello"], vocab_size=300, special_tokens=["<|a|>", ""])
    with pytest.raises(UserError, match=r"special token '<\|a\|>' is given twice"):
        train_bpe(["hello"], vocab_size=300, special_tokens=["<|a|>", "<|b|>", "<|a|>"])


# ---------------------------------------------------------------------------- files

def test_train_from_files_equals_train_from_strings(tmp_path: Path) -> None:
    text = "\n".join(task_world(30_000)) + "\n"
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    half = text.index("\nQ", len(text) // 2) + 1  # cut after a newline
    a.write_text(text[:half], encoding="utf-8")
    b.write_text(text[half:], encoding="utf-8")
    from_strings = train_bpe([text], vocab_size=800)
    from_files = train_bpe(files=[a, b], vocab_size=800, workers=1)
    assert from_files.merges == from_strings.merges
    both = train_bpe([text[:half]], files=[b], vocab_size=800, workers=1)
    assert both.merges == from_strings.merges


def _check_blocks(blocks: list[str], text: str) -> None:
    """Blocks join to the text; each cut is between "<non-space>\n" and a non-space character."""
    assert "".join(blocks) == text
    for prev, block in pairwise(blocks):
        assert prev.endswith("\n") and not prev[-2].isspace(), (prev, block)
        assert not block[0].isspace(), (prev, block)


def test_iter_file_blocks_small_blocks(tmp_path: Path) -> None:
    """block_chars=1: a cut before every line that starts with a non-space character."""
    path = tmp_path / "t.txt"
    text = "one\ntwo\n  three\n\tfour\nfive 日本\nsix"
    path.write_text(text, encoding="utf-8")
    assert list(iter_file_blocks(path, block_chars=1)) == ["one\n", "two\n  three\n\tfour\n", "five 日本\n", "six"]
    # block_chars=10: "one\ntwo\n" is 8 < 10 characters; then lines that start with spaces
    # cannot be cut before; "five" can
    assert list(iter_file_blocks(path, block_chars=10)) == ["one\ntwo\n  three\n\tfour\n", "five 日本\nsix"]
    for block_chars in (1, 5, 10, 100):
        _check_blocks(list(iter_file_blocks(path, block_chars=block_chars)), text)
    assert list(iter_file_blocks(path)) == [text]  # the default block (1 MB) holds it all
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert list(iter_file_blocks(empty)) == []


@pytest.mark.parametrize("text", ["foo  \nbar", "para\n\nnext", "crlf\r\nline", " \n1", "a!\nb", "a!\r\nb"])
def test_block_cuts_keep_the_counts(tmp_path: Path, text: str) -> None:
    """"foo  \nbar" as one text, gpt2: "foo" | "  " | "\n" | "bar" (\\s+(?!\\S) stops before
    the last whitespace character, "\n", because "b" follows; "\n" is left for \\s+).
    Cut into "foo  \n" + "bar", the first block would end in whitespace and \\s+(?!\\S)
    would take all of it: "foo" | "  \n" | "bar". So blocks are cut only after "<non-space>\n"
    (after "a!\n", where cl100k's chunk is "!\n" either way)."""
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    blocks = list(iter_file_blocks(path, block_chars=1))
    _check_blocks(blocks, text)
    for name in PATTERNS:
        pre = PreTokenizer.named(name)
        assert count_words(blocks, pre_tokenizer=pre) == count_words([text], pre_tokenizer=pre), name


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.text(alphabet=st.sampled_from(list("ab1'!s \t\r\u00a0\x1c\x85\u3000é日")), max_size=8),
                      max_size=12),
       block_chars=st.integers(1, 30))
def test_blocks_keep_the_counts_random(lines: list[str], block_chars: int) -> None:
    """Blocks join to the file, and counting block by block == counting the whole text,
    for every pre-tokenizer: no chunk spans a cut, and no chunk before a cut depends on
    what follows it."""
    text = "\n".join(lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.txt"
        path.write_bytes(text.encode("utf-8"))
        blocks = list(iter_file_blocks(path, block_chars=block_chars))
    _check_blocks(blocks, text)
    for name in PATTERNS:
        pre = PreTokenizer.named(name)
        assert count_words(blocks, pre_tokenizer=pre) == count_words([text], pre_tokenizer=pre), name


def _task_world_file(tmp_path: Path) -> tuple[Path, str]:
    text = "\n".join(task_world(30_000)) + "\n"
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    return path, text


def test_counting_with_two_workers_equals_one(tmp_path: Path) -> None:
    """More blocks than the 2 per worker kept in flight, with and without a progress callback
    (a finished block must be counted once, not again at every later wait)."""
    path, text = _task_world_file(tmp_path)
    pre = PreTokenizer.named("gpt2")
    blocks = list(iter_file_blocks(path, block_chars=2000))
    assert len(blocks) > 8
    sequential = count_words(blocks, pre_tokenizer=pre, workers=1)
    assert sequential == count_words([text], pre_tokenizer=pre)
    assert count_words(iter_file_blocks(path, block_chars=2000), pre_tokenizer=pre, workers=2) == sequential
    progress: list[int] = []
    assert count_words(blocks, pre_tokenizer=pre, workers=2, progress=progress.append) == sequential
    assert sum(progress) == len(text)


def test_non_utf8_file_names_the_byte_offset(tmp_path: Path) -> None:
    """b"hello\\nw\\xffrld\\n": line 1 is 6 bytes, so the bad byte is at offset 6 + 1 = 7, line 2."""
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello\nw\xffrld\n")
    with pytest.raises(UserError, match=r"bad\.txt: not valid UTF-8 at byte offset 7 \(line 2\); pass --errors replace"):
        list(iter_file_blocks(path))
    with pytest.raises(UserError, match="byte offset 7"):
        train_bpe(files=[path], vocab_size=300, workers=1)
    # a multibyte character before the bad byte counts by its bytes, not as one character
    path.write_bytes("日本\n".encode() + b"ab\xe6\n")
    with pytest.raises(UserError, match=r"byte offset 9 \(line 2\)"):
        list(iter_file_blocks(path))


def test_errors_replace(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello\nw\xffrld w\xffrld\n")
    assert "".join(iter_file_blocks(path, errors="replace")) == "hello\nw\ufffdrld w\ufffdrld\n"
    tok = train_bpe(files=[path], vocab_size=300, errors="replace", workers=1)
    assert tok.decode(tok.encode("w\ufffdrld")) == "w\ufffdrld"


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.txt: no such file"):
        list(iter_file_blocks(tmp_path / "nope.txt"))
    with pytest.raises(UserError, match="no such file"):
        train_bpe(files=[tmp_path / "nope.txt"], vocab_size=300, workers=1)
