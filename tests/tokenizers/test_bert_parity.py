"""BERT's text stages and WordPiece against HF `tokenizers` on every code point of planes 0, 1 and 14.

HF's classes come from three Unicode versions (see bert_text.py). The sweep and the vocabulary of
every character are bert_reference.py's. Default run: normalizer and pre-tokenizer in all 24 settings,
ids and decode in BERT uncased through both file formats. Slow: the same in BERT cased, ids in
every setting, and each code point alone between two letters.
"""

from __future__ import annotations

import itertools
import json
import unicodedata
from pathlib import Path

import pytest
import regex

from llmlab.tokenizers import bert_unicode
from llmlab.tokenizers.bert_reference import POINTS, SWEEP, char_vocab, mismatches
from llmlab.tokenizers.bert_text import BertNormalizer, bert_lowercase, bert_pre_tokenize, nfd
from llmlab.tokenizers.hf_io import load_tokenizer
from llmlab.tokenizers.wordpiece import WordPieceTokenizer

tokenizers = pytest.importorskip("tokenizers")

# (clean_text, handle_chinese_chars, strip_accents, lowercase): every combination HF's BertNormalizer takes
SETTINGS = list(itertools.product([True, False], [True, False], [None, True, False], [True, False]))
NAMED = {"uncased": (True, True, None, True), "cased": (True, True, None, False)}


def normalizers(setting: tuple) -> tuple[BertNormalizer, object]:
    clean, cjk, strip, lower = setting
    return (BertNormalizer(clean_text=clean, handle_chinese_chars=cjk, strip_accents=strip, lowercase=lower),
            tokenizers.normalizers.BertNormalizer(clean_text=clean, handle_chinese_chars=cjk, strip_accents=strip,
                                                  lowercase=lower))


def saved_pair(setting: tuple, directory: Path) -> tuple[WordPieceTokenizer, object]:
    """llmlab's tokenizer.json of the char vocabulary, read back by llmlab and by HF."""
    WordPieceTokenizer(char_vocab(), normalizer=normalizers(setting)[0]).save(directory)
    return load_tokenizer(directory / "tokenizer.json"), tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "clean{}-cjk{}-strip{}-lower{}".format(*s))
def test_the_sweep_normalizes_and_splits_as_hf(setting):
    ours, hf = normalizers(setting)
    pre = tokenizers.pre_tokenizers.BertPreTokenizer()
    for k, s in enumerate(SWEEP):
        expected = hf.normalize_str(s)
        assert ours(s) == expected, f"chunk {k}"
        assert bert_pre_tokenize(expected) == [w for w, _ in pre.pre_tokenize_str(expected)], f"chunk {k}"


@pytest.mark.parametrize("name", ["uncased", pytest.param("cased", marks=pytest.mark.slow)])
def test_the_sweep_encodes_and_decodes_as_hf(name, tmp_path):
    """tokenizer.json and BERT's vocab.txt (read by HF's BertWordPieceTokenizer): 48/48 strings."""
    ours, hf = saved_pair(NAMED[name], tmp_path)
    assert mismatches(ours, hf, SWEEP) == []
    lowercase = NAMED[name][3]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}))
    ours = load_tokenizer(tmp_path / "vocab.txt")
    hf = tokenizers.BertWordPieceTokenizer(str(tmp_path / "vocab.txt"), lowercase=lowercase)
    assert mismatches(ours, hf, SWEEP) == []


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "clean{}-cjk{}-strip{}-lower{}".format(*s))
def test_each_setting_encodes_the_sweep_and_each_code_point_as_hf(setting, tmp_path):
    ours, hf = saved_pair(setting, tmp_path)
    assert mismatches(ours, hf, SWEEP) == []
    alone = [f"a{chr(c)}b" for c in POINTS]
    expected = [e.ids for e in hf.encode_batch(alone, add_special_tokens=False)]
    assert [hex(POINTS[k]) for k, s in enumerate(alone) if ours.encode(s, allowed_special="all") != expected[k]] == []

PYTHON_UNICODE = tuple(map(int, unicodedata.unidata_version.split(".")))  # (14, 0, 0) on Python 3.11


def test_where_python_and_hf_tables_differ():
    """Hand-checked cases, one per way the versions differ (Unicode 8.0 categories, 9.0 NFD, 17.0 case)."""
    norm = BertNormalizer()
    assert norm("a\u0890b\x0bc") == "a\u0890bc"  # U+0890 is Cf since 14.0, unassigned (kept) in 8.0; VT is Cc
    assert bert_pre_tokenize("a\u2e43b a\u166db a\U000111c9b") == ["a\u2e43b", "a", "\u166d", "b", "a", "\U000111c9", "b"]
    # ^ U+2E43 is Po since 9.0; U+166D was Po in 8.0 (So since 12.0), U+111C9 Po in 8.0 (Mn since 11.0)
    assert norm("a\u1734\u07fd") == "a\u07fd"  # Mn in 8.0 (Mc since 14.0) is stripped; U+07FD (Mn, 11.0) is not
    assert nfd("a\u0301\u0323") == "a\u0323\u0301"  # canonical order: combining class 220 before 230
    assert nfd("a\u0301\u1dfa") == "a\u0301\u1dfa"  # 230 then 218: U+1DFA is from 14.0, a starter for 9.0
    if PYTHON_UNICODE >= (14, 0):  # Python 3.10's tables (13.0) do not have U+1DFA either
        assert unicodedata.normalize("NFD", "a\u0301\u1dfa") == "a\u1dfa\u0301"  # which Python's NFD reorders
    assert bert_lowercase("\u1c89\ua7cbΣ") == "\u1c8a\u0264σ"  # Unicode 16.0 case pairs; Σ -> σ per character


@pytest.mark.skipif(PYTHON_UNICODE < (14, 0),
                    reason="the expected changes are those up to Unicode 14.0 (Python 3.11's tables)")
def test_the_generated_tables_agree_with_this_pythons_unicodedata():
    """Independent of HF: where a code point's category did not change since 8.0, the tables hold
    exactly Python's classes; the changes are the few UCD release notes list."""
    def points(ranges):
        return {c for lo, hi in ranges for c in range(lo, hi + 1)}

    def category(c):
        return unicodedata.category(chr(c))
    assert bert_unicode.CATEGORIES_VERSION == "8.0.0" and bert_unicode.NFD_VERSION == "9.0.0"
    assert {c for c in points(bert_unicode.PUNCTUATION) if category(c)[0] != "P"} == {0x166D, 0x111C9}
    assert {c for c in points(bert_unicode.NONSPACING_MARKS) if category(c) != "Mn"} == {0x1734}
    marks = "".join(chr(c) for c in sorted(points(bert_unicode.NONSPACING_MARKS)))
    assert regex.fullmatch(r"\p{M}+", marks)  # bert_text finds them as marks of `regex`'s Unicode
    assert all(category(c) in ("Cc", "Cf", "Co") for c in points(bert_unicode.OTHER))
    assert all(unicodedata.combining(chr(c)) or unicodedata.decomposition(chr(c))
               for c in points(bert_unicode.NFD_STARTERS) if category(c) != "Cn")
    python_cases = {c: m for c, m in bert_unicode.LOWERCASE if category(c) != "Cn"}
    assert all(chr(c).lower() == m for c, m in python_cases.items())
