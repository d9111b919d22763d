"""Script-aware pre-tokenization, language sampling, vocabulary extension and the multilingual experiments."""

import random
import unicodedata

import pytest

from llmlab.data.multilingual import code_mixed, language_corpus, parallel_sentences
from llmlab.errors import UserError
from llmlab.tokenizers import load_tokenizer, train_bpe
from llmlab.tokenizers.extend import extend_bpe, extension_gain, learn_domain_merges, merges_for_tokens
from llmlab.tokenizers.pre_tokenizers import PreTokenizer
from llmlab.tokenizers.sampling import balanced_corpus, language_budgets, language_weights

SCRIPT = PreTokenizer.named("script")


def test_script_chunks():
    text = "Hello мир, नमस्ते! 東京へ行きます。 x==12 größe"
    assert SCRIPT.split(text) == ["Hello", " мир", ",", " नमस्ते", "!", " 東", "京", "へ", "行", "きます", "。",
                                  " x", "=", "=", "1", "2", " größe"]
    assert SCRIPT.split("abcабв") == ["abc", "абв"]  # a script change is a boundary even without a space


def _random_text(rng: random.Random) -> str:
    chars = [chr(rng.choice([rng.randrange(0x20, 0x3000), rng.randrange(0x3000, 0xA000),
                             rng.randrange(0x1F300, 0x1F700), 0x20, 0x0A, 0x30FC, 0x301])) for _ in range(60)]
    # characters assigned in Python's Unicode version: newer ones may differ from Oniguruma's tables
    return "".join(c for c in chars if unicodedata.category(c) not in ("Cn", "Cs"))


def test_script_pattern_runs_identically_in_hf_tokenizers():
    hf = pytest.importorskip("tokenizers")
    split = hf.pre_tokenizers.Split(hf.Regex(SCRIPT.pattern), "isolated")
    rng = random.Random(0)
    samples = [_random_text(rng) for _ in range(300)] + code_mixed(30, seed=0)
    samples += [" ".join(r.values()) for r in parallel_sentences(30, seed=0)]
    for text in samples:
        ours = SCRIPT.split(text)
        assert "".join(ours) == text
        assert ours == [c for c, _ in split.pre_tokenize_str(text)], text


def test_bpe_with_the_script_pre_tokenizer_round_trips_through_hf(tmp_path):
    hf = pytest.importorskip("tokenizers")
    texts = [language_corpus(lang, 4000, seed=0) for lang in ("en", "ru", "ja", "hi")] + code_mixed(40, seed=0)
    tok = train_bpe(texts, vocab_size=500, pre_tokenizer="script")
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).pre_tokenizer.name == "script"
    theirs = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in code_mixed(10, seed=9):
        assert theirs.encode(text).ids == tok.encode(text)


def test_language_weights_by_hand():
    """q = (0.9, 0.1); q^0.5 = (0.9487, 0.3162), sum 1.2649 -> p = (0.75, 0.25). alpha 0: uniform."""
    w = language_weights({"en": 900, "hi": 100}, 0.5)
    assert w["en"] == pytest.approx(0.75) and w["hi"] == pytest.approx(0.25)
    assert language_weights({"en": 900, "hi": 100}, 0.0) == {"en": 0.5, "hi": 0.5}
    assert language_weights({"en": 900, "hi": 100}, 1.0) == {"en": 0.9, "hi": 0.1}
    assert language_budgets({"en": 900, "hi": 100}, 0.5, 1000) == {"en": 750, "hi": 250}
    with pytest.raises(UserError):
        language_weights({"en": 0}, 0.3)


def test_balanced_corpus_upsamples_the_small_language():
    texts = {"en": "a b c\n" * 150, "hi": "क ख\n" * 10}  # 900 and 40 characters
    out = balanced_corpus(texts, 0.0, seed=0)  # equal shares of 940: 470 each
    assert 470 <= len(out["en"]) <= 476 and 470 <= len(out["hi"]) <= 474
    assert balanced_corpus(texts, 0.0, seed=0) == out


BASE = train_bpe([language_corpus("en", 20_000, seed=0)], vocab_size=400, special_tokens=["<|endoftext|>"])


def test_extension_keeps_every_old_id_and_encoding_where_no_new_merge_applies(tmp_path):
    domain = "\n".join(code_mixed(80, seed=0))
    merges = learn_domain_merges(BASE, domain, 30)
    ext = extend_bpe(BASE, merges)
    assert all(ext.vocab[b] == i for b, i in BASE.vocab.items()) and ext.special_tokens == BASE.special_tokens
    assert ext.vocab_size == BASE.vocab_size + 30
    assert sorted(set(ext.vocab.values()) - set(BASE.vocab.values())) == list(range(400, 430))  # after the special
    plain = language_corpus("en", 2000, seed=7)
    assert all(ext.encode(line) == BASE.encode(line) for line in plain.splitlines()
               if not any(a + b in line.encode() for a, b in merges))
    gain = extension_gain(BASE, ext, domain)
    assert gain.tokens_after < gain.tokens_before and gain.new_tokens == 30
    hf = pytest.importorskip("tokenizers")
    ext.save(tmp_path)
    theirs = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in [*code_mixed(10, seed=3), plain[:500]]:
        assert theirs.encode(text).ids == ext.encode(text)


def test_given_tokens_become_single_tokens():
    ext = extend_bpe(BASE, merges_for_tokens(BASE, ["kubectl", " Ошибка"]))
    assert len(ext.encode("kubectl")) == 1 and len(ext.encode(" Ошибка")) == 1
    with pytest.raises(UserError, match="spans pre-tokenizer chunks"):
        merges_for_tokens(BASE, ["foo bar"])
    with pytest.raises(UserError, match="already a merge"):
        extend_bpe(BASE, BASE.merges[:1])


def test_balanced_training_lowers_the_small_languages_fertility():
    from llmlab.tokenizers.strategies import balanced_training_report, builtin_corpora

    texts = builtin_corpora({"en": 40_000, "ru": 2_000, "hi": 2_000}, seed=0)
    evals = builtin_corpora({"en": 3_000, "ru": 3_000, "hi": 3_000}, seed=1)
    rows = {r.lang: r for r in balanced_training_report(texts, evals, vocab_size=500, alpha=0.3)}
    assert rows["ru"].share_sampled > rows["ru"].share_plain
    assert rows["hi"].fertility_sampled < rows["hi"].fertility_plain
    assert rows["en"].fertility_sampled >= rows["en"].fertility_plain


def test_code_mixed_comparison_table():
    from llmlab.tokenizers.strategies import code_mixed_comparison, code_mixed_corpora, comparison_table

    train, evaluation = code_mixed_corpora(train_chars_per_lang=3000, n_train=60, n_eval=20)
    setups = {"bpe gpt2": ("bpe", {"pre_tokenizer": "gpt2"}), "bpe script": ("bpe", {"pre_tokenizer": "script"}),
              "nope": ("bpe", {"pre_tokenizer": "nope"})}
    result = code_mixed_comparison(train, evaluation, vocab_size=400, setups=setups)
    assert [r.setup for r in result.rows] == ["bpe gpt2", "bpe script"] and result.missing[0].startswith("nope")
    assert comparison_table(result).count("\n") == 3
