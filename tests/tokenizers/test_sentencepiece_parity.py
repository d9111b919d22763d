"""Parity with SentencePiece and HF on SentencePiece models: Unigram and BPE `.model` files (three
normalisation rules, byte fallback), and the tokenizer.json files transformers converts them to
(Llama-style BPE; Unigram with a Precompiled charsmap). Artifacts are built at test time by the
reference libraries (llmlab.tokenizers.sp_reference); every string of `parity_texts()` and of a
sweep of planes 0, 1 and 14 must give the same ids and the same decoded text.
"""

from __future__ import annotations

import base64
import json
import struct
from functools import cache

import pytest

from llmlab.errors import UserError
from llmlab.tokenizers import sp_reference as ref
from llmlab.tokenizers.charsmap import Charsmap, read_charsmap
from llmlab.tokenizers.hf_io import from_hf_json, load_tokenizer
from llmlab.tokenizers.sp_bpe import SentencePieceBPE
from llmlab.tokenizers.unigram import UnigramTokenizer
from llmlab.tokenizers.unigram_io import load_sentencepiece_model

spm = pytest.importorskip("sentencepiece")
tokenizers = pytest.importorskip("tokenizers")


@cache
def model(kind: str, rule: str, byte_fallback: bool = True) -> bytes:
    options = {**ref.LLAMA_OPTIONS, "byte_fallback": byte_fallback} if rule == "identity" else {
        "byte_fallback": byte_fallback, "normalization_rule_name": rule}  # identity: Llama 2's settings
    return ref.train_model(kind, vocab_size=1000 if kind == "bpe" else 800, texts=ref.training_texts(30_000), **options)


@cache
def converted(kind: str, rule: str, converter: str) -> str:
    return json.dumps(ref.hf_json(model(kind, rule), converter))


@cache
def texts(sweep: str) -> tuple[str, ...]:
    """The parity strings plus the code-point sweep: "sample" (every 24th chunk; the default suite)
    or "full" (all of planes 0, 1 and 14: the slow tests)."""
    chunks = ref.codepoint_sweep()
    return tuple(ref.parity_texts() + (chunks if sweep == "full" else chunks[::24]))


SWEEPS = ["sample", pytest.param("full", marks=pytest.mark.slow)]


def mismatches_sp(tok, sp, strings) -> list[str]:
    return [s for s in strings if tok.encode(s) != sp.encode(s) or tok.decode(sp.encode(s)) != sp.decode(sp.encode(s))]


def mismatches_hf(tok, hf, strings) -> list[str]:
    bad = []
    for s in strings:
        ids = hf.encode(s, add_special_tokens=False).ids
        # HF matches added tokens (<unk>, <s>, </s>) in the text: llmlab does when they are allowed
        if tok.encode(s, allowed_special="all") != ids or tok.decode(ids) != hf.decode(ids, skip_special_tokens=False):
            bad.append(s)
    return bad


@pytest.mark.parametrize("sweep", SWEEPS)
@pytest.mark.parametrize("rule", ["nmt_nfkc", "nfkc", "identity"])
def test_unigram_model_matches_sentencepiece(rule, sweep):
    sp = spm.SentencePieceProcessor(model_proto=model("unigram", rule))
    tok = load_sentencepiece_model(model("unigram", rule))
    assert isinstance(tok, UnigramTokenizer)
    assert mismatches_sp(tok, sp, texts(sweep)) == []


@pytest.mark.parametrize("rule", ["nmt_nfkc", "identity"])
def test_unigram_long_texts_with_cached_words_match_sentencepiece(rule):
    """Long texts (running totals in the tens of thousands, where float32 rounding is coarse) whose words
    were cached from short ones, and tie-heavy digit runs: the cached paths (`stable_path`) and the
    words walked again must together give SentencePiece's ids, cold and warm."""
    sp = spm.SentencePieceProcessor(model_proto=model("unigram", rule))
    tok = load_sentencepiece_model(model("unigram", rule))
    short = ref.parity_texts()
    long = [" ".join(short), " ".join(reversed(short)) * 2, "0000 1111 2222 ---- " * 400 + " ".join(short[:50])]
    assert mismatches_sp(tok, sp, long) == []  # cold
    assert mismatches_sp(tok, sp, short) == [] and mismatches_sp(tok, sp, long) == []  # warm


@pytest.mark.parametrize("sweep", SWEEPS)
@pytest.mark.parametrize("rule", ["identity", "nmt_nfkc"])
def test_bpe_model_matches_sentencepiece(rule, sweep):
    sp = spm.SentencePieceProcessor(model_proto=model("bpe", rule))
    tok = load_sentencepiece_model(model("bpe", rule))
    assert isinstance(tok, SentencePieceBPE)
    assert tok.vocab_size == sp.get_piece_size()
    if rule == "identity":  # Llama-style: whitespace-only pieces, and words still cut safely
        assert "▁▁" in tok.vocab and tok._split
    assert mismatches_sp(tok, sp, texts(sweep)) == []


@pytest.mark.parametrize("sweep", SWEEPS)
@pytest.mark.parametrize("converter", ["llama", "auto"])
def test_bpe_tokenizer_json_matches_hf(converter, sweep, tmp_path):
    data = converted("bpe", "identity", converter)
    (tmp_path / "tokenizer.json").write_text(data, encoding="utf-8")
    tok = load_tokenizer(tmp_path)  # one entry point: hf_io dispatches byte_fallback BPE to sp_bpe
    assert isinstance(tok, SentencePieceBPE)
    assert mismatches_hf(tok, tokenizers.Tokenizer.from_str(data), texts(sweep)) == []


@pytest.mark.parametrize("converter", ["llama", "auto"])
def test_special_tokens_in_text_as_hf(converter):
    """Allowed specials split the text as HF's added tokens do; the Llama file's Metaspace
    (prepend_scheme "first") puts no "▁" after one, the generic file's ("always") does."""
    data = converted("bpe", "identity", converter)
    tok, hf = from_hf_json(json.loads(data)), tokenizers.Tokenizer.from_str(data)
    for text in ["<s>x", "a</s>b c", "<s> x", "<s>[INST] hi [/INST]", "</s><s>"]:
        assert tok.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids, text
    assert tok.encode("<s>x") != hf.encode("<s>x", add_special_tokens=False).ids  # by default, specials are text


@pytest.mark.parametrize("sweep", SWEEPS)
@pytest.mark.parametrize("rule", ["nmt_nfkc", "identity"])
def test_unigram_precompiled_tokenizer_json_matches_hf(rule, sweep):
    data = converted("unigram", rule, "auto")
    assert any(s["type"] == "Precompiled" for s in json.loads(data)["normalizer"]["normalizers"]) == (rule != "identity")
    tok = from_hf_json(json.loads(data))
    assert mismatches_hf(tok, tokenizers.Tokenizer.from_str(data), texts(sweep)) == []


def test_encode_batch_pickles_the_charsmap_and_pipelines():
    """Worker processes get the tokenizer pickled: the charsmap and HF pipeline must survive that."""
    strings = list(texts("sample"))[:40]
    for tok in (load_sentencepiece_model(model("bpe", "nmt_nfkc")),
                from_hf_json(json.loads(converted("unigram", "nmt_nfkc", "auto")))):
        assert tok.encode_batch(strings, num_workers=2) == [tok.encode(s) for s in strings]


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_stream_decoder_gives_the_decoded_text(kind):
    tok = load_sentencepiece_model(model(kind, "identity"))
    for text in ["Hello wörld 🙂", " two  spaces", "日本語のテキスト", "        return x"]:
        ids = tok.encode(text)
        assert "".join(tok.stream_decoder()(ids)) == tok.decode(ids) == text


def test_charsmap_normalises_as_sentencepiece():
    """The issue's examples: Python's NFKC differs from nmt_nfkc's table on them; the table is read exactly."""
    sp = spm.SentencePieceProcessor(model_proto=model("unigram", "nmt_nfkc"))
    tok = load_sentencepiece_model(model("unigram", "nmt_nfkc"))
    for text in ["ꟳ", "🅬", "㋿", " a\u3000 b\u200b ", "x▁y", "ﬁ", "\x01"]:
        assert tok.normalize(text) == sp.normalize(text), text
    assert tok.normalize("㋿") == "▁令和"
    assert tok.normalize("ꟳ") == "▁F"


def test_decode_unknown_and_leading_spaces_as_sentencepiece():
    """No byte fallback: an unknown character is <unk>, and SentencePiece decodes it as " ⁇ "."""
    m = model("unigram", "identity", byte_fallback=False)
    sp = spm.SentencePieceProcessor(model_proto=m)
    tok = load_sentencepiece_model(m)
    for text in ["a ☃ b", "☃☃x", "  x", "▁x", "x▁", "<s> y"]:
        assert tok.encode(text) == sp.encode(text), text
        assert tok.decode(sp.encode(text)) == sp.decode(sp.encode(text)), text
    assert " \u2047 " in tok.decode(tok.encode("a ☃ b"))
    space = sp.piece_to_id("▁")
    # remove_extra_whitespaces is off: only the first "▁" goes (with it on, sentencepiece drops both)
    assert tok.decode([space, space, sp.piece_to_id("x")]) == sp.decode([space, space, sp.piece_to_id("x")]) == " x"
    assert tok.decode([sp.bos_id(), sp.piece_to_id("x")]) == "x"  # control pieces decode as nothing


def test_bpe_without_byte_fallback_matches_sentencepiece():
    m = model("bpe", "nmt_nfkc", byte_fallback=False)
    sp = spm.SentencePieceProcessor(model_proto=m)
    assert mismatches_sp(load_sentencepiece_model(m), sp, texts("sample")) == []


def test_read_charsmap_by_hand():
    """A two-rule trie built by hand: "a" -> "b", "ab" -> "" (the longest match wins; HF takes the
    shortest source that prefixes a grapheme)."""
    # Darts units: root 0 (offset 1 -> children at 1 ^ c); "a" = 0x61 at 0x60; its offset 0x100 puts
    # the leaf value at 0x160 and the child "b" (0x62) at 0x160 ^ 0x62, whose leaf value is at 0x102 ^ 0x200.
    units = [0] * 0x400
    units[0] = 1 << 10
    units[0x60] = 0x61 | (1 << 8) | (0x100 << 10)
    units[0x160] = (1 << 31) | 0  # "a" -> strings[0:] = "b"
    units[0x102] = 0x62 | (1 << 8) | (0x200 << 10)
    units[0x102 ^ 0x200] = (1 << 31) | 2  # "ab" -> strings[2:] = ""
    blob = struct.pack("<I", 4 * len(units)) + struct.pack(f"<{len(units)}I", *units) + b"b\0\0"
    assert read_charsmap(blob) == {"a": "b", "ab": ""}
    cm = Charsmap.from_blob(blob)
    assert cm.chunks("xaab") == [("x", False), ("b", True), ("", True)]
    assert cm.hf_precompiled("xaab") == "xbbb"
    with pytest.raises(UserError, match="precompiled_charsmap"):
        read_charsmap(blob[:10])
    data = json.loads(converted("unigram", "nmt_nfkc", "auto"))
    data["normalizer"]["normalizers"][0]["precompiled_charsmap"] = base64.b64encode(b"\xff\xff\xff\xff").decode()
    with pytest.raises(UserError, match="precompiled_charsmap"):
        from_hf_json(data)


def _edit_bpe(edit) -> dict:
    data = json.loads(converted("bpe", "identity", "llama"))
    edit(data)
    return data


BAD_JSON = {
    "missing-byte-piece": (lambda d: d["model"]["vocab"].pop("<0x41>"), r"model\.byte_fallback: true, but model\.vocab"),
    "metaspace-split": (lambda d: d["pre_tokenizer"].update(split=True), r"pre_tokenizer: Metaspace split true"),
    "merge-not-in-vocab": (lambda d: d["model"]["merges"].insert(0, ["▁", "☃"]), r"model\.merges\[0\]"),
    "normalizer-step": (lambda d: d.update(normalizer={"type": "BertNormalizer"}), r"normalizer: 'BertNormalizer'"),
    "unk-token": (lambda d: d["model"].update(unk_token="<nope>"), r"model\.unk_token"),
    "dropout": (lambda d: d["model"].update(dropout=0.1), r"model\.dropout"),
}


@pytest.mark.parametrize("name", list(BAD_JSON))
def test_malformed_bpe_tokenizer_json_names_the_field(name):
    edit, match = BAD_JSON[name]
    with pytest.raises(UserError, match=match):
        from_hf_json(_edit_bpe(edit))


def test_malformed_model_files_are_user_errors(tmp_path):
    good = model("bpe", "identity")
    with pytest.raises(UserError, match="truncated protobuf"):
        load_sentencepiece_model(good[: len(good) // 2])
    with pytest.raises(UserError, match="not supported"):
        load_sentencepiece_model(ref.train_model("bpe", vocab_size=400, texts=ref.training_texts(20_000),
                                                 user_defined_symbols=["<tool>"]))
    with pytest.raises(UserError, match="model_type 3"):
        load_sentencepiece_model(ref.train_model("word", vocab_size=400, texts=ref.training_texts(20_000)))


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_unused_pieces_as_sentencepiece(kind):
    """Pieces marked UNUSED are never output: SentencePiece's BPE still merges through them and splits
    them back into the pair they came from; its Unigram leaves them out of the lattice."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model(kind, "identity"))
    longest = sorted((p for p in proto.pieces if p.type == 1 and len(p.piece) > 1), key=lambda p: -len(p.piece))[:40]
    for piece in longest[::2]:
        piece.type = 5  # UNUSED
    m = proto.SerializeToString()
    sp = spm.SentencePieceProcessor(model_proto=m)
    tok = load_sentencepiece_model(m)
    unused = {sp.piece_to_id(p.piece) for p in longest[::2]}
    strings = texts("sample")
    assert any(unused & set(load_sentencepiece_model(model(kind, "identity")).encode(s)) for s in strings)
    assert mismatches_sp(tok, sp, strings) == []
    assert not any(unused & set(tok.encode(s)) for s in strings)
