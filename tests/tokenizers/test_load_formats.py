"""`load_tokenizer(path)`: one entry point that sniffs every format llmlab reads, each checked against the
library that wrote it (HF `tokenizers`, sentencepiece); and the regex-engine warning for tokenizer.json."""

from __future__ import annotations

import io
import json
import warnings
from functools import cache
from pathlib import Path

import pytest

from llmlab.cli import main
from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.errors import UserError
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.hf_io import FORMATS, load_tokenizer
from llmlab.tokenizers.pre_tokenizers import CL100K_BASE, PreTokenizer
from llmlab.tokenizers.regex_engines import RegexEngineWarning, engine_differences
from llmlab.tokenizers.unigram import UnigramTokenizer
from llmlab.tokenizers.unigram_train import train_unigram
from llmlab.tokenizers.wordpiece import WordPieceTokenizer
from llmlab.tokenizers.wordpiece_train import train_wordpiece

tokenizers = pytest.importorskip("tokenizers")
spm = pytest.importorskip("sentencepiece")

EOT = "<|endoftext|>"
TEXTS = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=30_000)))
VARIED = ["Hello, World! It's HERE: 3.14159 and 0000.", "emoji 👍🏽 CJK 日本語 한국어 Ελληνικά", "tabs\tand  \n\n spaces",
          "Hugging face HUGS the huggable hugger.", "naïve café résumé ﬁ"]


@cache
def bpe() -> BPETokenizer:
    return train_bpe(TEXTS + VARIED * 3, vocab_size=600, special_tokens=[EOT])


def test_every_llmlab_tokenizer_json_loads_from_its_folder_or_file(tmp_path):
    wp = train_wordpiece(TEXTS, vocab_size=400)
    uni = train_unigram(TEXTS, 400, byte_fallback=True)
    for name, tok in {"bpe": bpe(), "wp": wp, "uni": uni}.items():
        tok.save(tmp_path / name)  # tokenizer.json + vocab.txt (a listing for BPE and Unigram, BERT's for WordPiece)
        for path in (tmp_path / name, tmp_path / name / "tokenizer.json"):
            back = load_tokenizer(path)
            assert type(back) is type(tok)
            assert [back.encode(t) for t in VARIED] == [tok.encode(t) for t in VARIED]


def test_a_sentencepiece_model_loads_by_sniffing(tmp_path):
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_writer=buf, vocab_size=500,
                                   model_type="unigram", minloglevel=2, num_threads=1, byte_fallback=True,
                                   normalization_rule_name="identity")
    (tmp_path / "spiece.model").write_bytes(buf.getvalue())
    (tmp_path / "my.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    for path in (tmp_path, tmp_path / "spiece.model", tmp_path / "my.model"):
        tok = load_tokenizer(path)
        assert isinstance(tok, UnigramTokenizer)
        assert [tok.encode(t) for t in VARIED] == [sp.encode(t) for t in VARIED]


@pytest.mark.parametrize("cased", [False, True])
def test_a_bert_vocab_txt_encodes_like_hf(tmp_path, cased):
    """BERT's vocab.txt alone: uncased unless a piece has an uppercase letter (or tokenizer_config says)."""
    train_wordpiece(TEXTS + VARIED * 3, vocab_size=500, lowercase=not cased).save(tmp_path)
    (tmp_path / "tokenizer.json").unlink()  # the vocab.txt is all there is
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, WordPieceTokenizer) and tok.normalizer.lowercase is not cased
    hf = tokenizers.BertWordPieceTokenizer(str(tmp_path / "vocab.txt"), lowercase=not cased)
    for text in [*VARIED, *TEXTS[:10]]:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids, text
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": cased}))
    assert load_tokenizer(tmp_path / "vocab.txt").normalizer.lowercase is cased


def test_gpt2_vocab_json_and_merges_txt_encode_like_hf(tmp_path):
    """HF's ByteLevelBPETokenizer.save_model writes GPT-2's pair; <|endoftext|> in vocab.json is special."""
    bl = tokenizers.implementations.ByteLevelBPETokenizer(add_prefix_space=False)
    bl.train_from_iterator(TEXTS, vocab_size=500, min_frequency=2, special_tokens=[EOT], show_progress=False)
    bl.save_model(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merges.txt", "vocab.json"]
    hf = tokenizers.implementations.ByteLevelBPETokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    hf.add_special_tokens([EOT])  # as GPT-2's tokenizer_config declares it
    for path in (tmp_path, tmp_path / "vocab.json", tmp_path / "merges.txt"):
        tok = load_tokenizer(path)
        assert tok.special_tokens == {EOT: 0}
        for text in [*VARIED, *TEXTS[:10], f"a{EOT}b"]:
            assert tok.encode(text, allowed_special="all") == hf.encode(text).ids, text


def test_unknown_files_and_half_pairs_are_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("just some text\n")
    with pytest.raises(UserError, match=r"notes.txt: not a tokenizer format llmlab reads \(tokenizer.json"):
        load_tokenizer(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="no tokenizer file in the folder"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match=r"missing\.json: no such file"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(UserError, match=r"merges\.txt needs its vocab\.json beside it"):
        load_tokenizer(tmp_path / "merges.txt")
    (tmp_path / "merges.txt").unlink()
    (tmp_path / "vocab.json").write_text('{"a": 0}')
    with pytest.raises(UserError, match=r"vocab\.json needs its merges\.txt beside it"):
        load_tokenizer(tmp_path)
    listing = tmp_path / "listing" / "vocab.txt"
    bpe().save(listing.parent)
    (listing.parent / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="not a tokenizer format"):
        load_tokenizer(listing)  # llmlab's BPE listing has no [UNK] line
    with pytest.raises(UserError, match=r"apply to \.tiktoken files"):
        load_tokenizer(tmp_path / "vocab.json", encoding="cl100k_base")
    assert len(FORMATS) == 5


def test_the_cli_reads_a_rank_file(tmp_path, capsys):
    from llmlab.tokenizers.tiktoken_file import save_tiktoken

    save_tiktoken(bpe(), tmp_path / "r50k_base.tiktoken")
    text = "Hello world 0000"
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "r50k_base.tiktoken"), "--text", text,
                 "--ids"]) == 0
    assert capsys.readouterr().out.split() == [str(i) for i in bpe().encode(text)]


# ---------------------------------------------------------------------- regex engines


def cl100k_saved(tmp_path: Path) -> Path:
    tok = BPETokenizer(bpe().vocab, bpe().merges, special_tokens=bpe().special_tokens,
                       pre_tokenizer=PreTokenizer.from_pattern(CL100K_BASE))
    with pytest.warns(RegexEngineWarning, match=r"written to .*tokenizer\.json: '\\\\p\{N\}\{1,3\}\+'"):
        tok.save(tmp_path)
    return tmp_path


def test_the_engines_really_differ_on_cl100k(tmp_path):
    """The warning's claim, checked: HF splits '0000' whole, llmlab (as tiktoken) as '000', '0'."""
    hf = tokenizers.Tokenizer.from_file(str(cl100k_saved(tmp_path) / "tokenizer.json"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegexEngineWarning)
        tok = load_tokenizer(tmp_path)
    pieces = hf.pre_tokenizer.pre_tokenize_str("0000")
    assert [p for p, _ in pieces] == ["0000"]
    assert tok.pre_tokenizer.split("0000") == ["000", "0"]
    assert [d.construct for d in engine_differences(CL100K_BASE)] == ["\\p{N}{1,3}+"]
    assert engine_differences(r"[{1,3}+]|\{1,3}+|\p{L}++|a{2}?") == []


def test_loading_a_cl100k_tokenizer_json_warns(tmp_path):
    folder = cl100k_saved(tmp_path)
    with pytest.warns(RegexEngineWarning, match=r"loaded from .*tokenizer.json: '\\\\p\{N\}\{1,3\}\+' at character "
                                                r"54 .*e.g. '0000' splits as \['0000'\] in HF and as \['000', '0'\]"):
        load_tokenizer(folder)


def test_the_cli_prints_the_warning_as_one_line(tmp_path, capsys):
    folder = cl100k_saved(tmp_path)
    assert main(["tokenizer", "encode", "--tokenizer", str(folder), "--text", "0000", "--ids"]) == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "warning" in x]
    assert line.startswith("warning: split pattern loaded from") and "'0000'" in line
