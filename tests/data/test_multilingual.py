"""The multilingual and code-mixed generators: deterministic, parallel, in the scripts they claim."""

import pytest
import regex

from llmlab.data.multilingual import LANGUAGES, code_mixed, language_corpus, parallel_sentences
from llmlab.errors import UserError

SCRIPT_OF = {"en": r"\p{Latin}", "de": r"\p{Latin}", "ru": r"\p{Cyrillic}", "el": r"\p{Greek}",
             "hi": r"\p{Devanagari}\p{M}", "ar": r"\p{Arabic}", "ja": r"\p{Han}\p{Hiragana}\p{Katakana}ー"}


def test_same_seed_same_sentences_and_other_seed_others():
    assert parallel_sentences(20, seed=3) == parallel_sentences(20, seed=3)
    assert parallel_sentences(20, seed=3) != parallel_sentences(20, seed=4)
    assert code_mixed(9, seed=1) == code_mixed(9, seed=1)


def test_every_language_is_written_in_its_script():
    for row in parallel_sentences(50, seed=0):
        assert set(row) == set(LANGUAGES)
        for lang, sentence in row.items():
            letters = [c for c in sentence if c.isalpha()]
            inside = [c for c in letters if regex.match(f"[{SCRIPT_OF[lang]}]", c)]
            assert len(inside) == len(letters), (lang, sentence)
    assert " " not in "".join(r["ja"] for r in parallel_sentences(50, seed=0))  # no spaces in Japanese


def test_parallel_rows_share_their_numbers_and_the_corpus_lines_are_translations():
    for row in parallel_sentences(40, seed=2):
        numbers = {tuple(regex.findall(r"\d+", s)) for lang, s in row.items() if lang != "ja"}
        assert len(numbers) == 1, row  # Japanese writes 7時45分, the others 7:45
    en, ru = language_corpus("en", 3000, seed=5), language_corpus("ru", 100, seed=5)
    assert len(en) >= 3000 and ru.splitlines()[0] == parallel_sentences(1, seed=5, languages=["ru"])[0]["ru"]


def test_agreement_examples():
    rows = parallel_sentences(300, seed=0)
    hi = " ".join(r["hi"] for r in rows)
    assert "अन्ना" in hi and "जाती है" in hi and "जाता है" in hi  # the verb agrees with the person
    assert any(r["el"].startswith(("Η ", "Ο ")) for r in rows)  # Greek names with their article


def test_code_mixed_has_mixed_scripts_and_code():
    samples = code_mixed(30, seed=0)
    joined = "\n".join(samples)
    assert "def " in joined and "#" in joined
    assert regex.search(r"\p{Devanagari}", joined) and regex.search(r"\p{Cyrillic}", joined)
    assert any(regex.search(r"\p{Devanagari}", s) and regex.search(r"[a-z]{3}", s) for s in samples)


def test_unknown_language_is_a_user_error():
    with pytest.raises(UserError, match="unknown language 'xx'"):
        parallel_sentences(1, seed=0, languages=["en", "xx"])


def test_data_generate_multilingual_writes_one_row_per_sentence_and_language(tmp_path):
    """3 parallel sentences x 7 languages = 21 rows; rows of one id are the same sentence translated."""
    import json

    from llmlab.cli import main

    out = tmp_path / "ml.jsonl"
    assert main(["data", "generate", "--kind", "multilingual", "--n", "3", "--seed", "4", "--out", str(out),
                 "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 * len(LANGUAGES) and set(rows[0]) == {"lang", "text", "id"}
    expected = parallel_sentences(3, seed=4)
    assert all(r["text"] == expected[r["id"]][r["lang"]] for r in rows)
    assert [r["lang"] for r in rows[:len(LANGUAGES)]] == list(LANGUAGES)


def test_data_generate_code_mixed_as_jsonl_and_text(tmp_path):
    import json

    from llmlab.cli import main

    out = tmp_path / "cm.jsonl"
    assert main(["data", "generate", "--kind", "code-mixed", "--n", "6", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == code_mixed(6, seed=0) and {r["lang"] for r in rows} == {"mixed"}
    txt = tmp_path / "ml.txt"
    assert main(["data", "generate", "--kind", "multilingual", "--n", "2", "--out", str(txt), "--quiet"]) == 0
    assert txt.read_text(encoding="utf-8").splitlines() == [s for r in parallel_sentences(2, seed=0) for s in r.values()]


def test_data_generate_refuses_other_extensions(tmp_path, capsys):
    from llmlab.cli import main

    assert main(["data", "generate", "--kind", "code-mixed", "--out", str(tmp_path / "x.csv"), "--quiet"]) == 2
    assert ".jsonl file or .txt" in capsys.readouterr().err
