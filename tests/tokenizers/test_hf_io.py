"""tokenizer.json files against HF `tokenizers` and `transformers` (offline, tiny, seeded).

Ground truth from outside: a file llmlab writes must encode in HF exactly as in llmlab,
and a file HF writes must encode in llmlab exactly as in HF.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.errors import UserError
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.bytelevel import visible
from llmlab.tokenizers.hf_io import load_tokenizer, save_tokenizer
from llmlab.tokenizers.normalizers import NORMALIZERS

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

EOT = "<|endoftext|>"

HARD = [
    "",
    " ",
    "Hello, world! It's a test; they're here, I'VE seen we'll.",
    "emoji 👍🏽 family 👨‍👩‍👧 flag 🇫🇷 and 🤖",
    "CJK 日本語のテキスト、中文字符 한국어",
    "combining e\u0301 a\u0308 o\u0302\u0323 vs é ä",
    "windows\r\nline\r\n\r\nends",
    "nul \x00 byte \x00\x00 and \x1c\x1f controls \x7f",
    "\ttabs\t\tand\t \t mixed",
    "a" + " " * 37 + "b     \n    c",
    "trailing spaces   ",
    "\n\n\n",
    "numbers 0 12 345 6789 1234567890 3.14159 -42 1,000,000 ٣٤٥ ⅫⅣ ①②",
    'def f(x):\n    return {"k": x ** 2}  # code\n\tif x != 0: pass\n',
    "ﬁ ligatures ﬂ, full-width ＡＢＣ１２３, ½ ™ ㎏",
    "ΑΣ ΣΑΣ Ὀδυσσεύς İstanbul ß ǅ",
    "nbsp\u00a0here, ideographic\u3000space, line\u2028sep, zero\u200bwidth",
    "x" * 300,
    "mixed123abc___...!!!???",
]


@cache
def hard_corpus() -> tuple[str, ...]:
    docs = list(pretrain_documents(GenerateConfig(kind="pretrain", chars=50_000)))
    return (*docs, *HARD * 3)


@cache
def trained(pre_tokenizer: str, normalizer: str = "none", add_prefix_space: bool = False,
            ignore_merges: bool = False) -> BPETokenizer:
    tok = train_bpe(hard_corpus(), vocab_size=1000, special_tokens=[EOT, "<|pad|>"], pre_tokenizer=pre_tokenizer,
                    normalizer=normalizer)
    if not (add_prefix_space or ignore_merges):
        return tok
    return BPETokenizer(tok.vocab, tok.merges, special_tokens=tok.special_tokens, pre_tokenizer=tok.pre_tokenizer,
                        normalizer=normalizer, add_prefix_space=add_prefix_space, ignore_merges=ignore_merges)


CONFIGS = [
    ("gpt2", "none", False, False),
    ("cl100k", "none", False, False),
    ("digits", "nfc", False, False),
    ("whitespace", "nfkc", False, False),
    ("gpt2", "lowercase", False, False),
    ("gpt2", "none", True, False),
    ("cl100k", "nfkc", True, False),
    ("cl100k", "none", False, True),
]
IDS = ["-".join(str(p) for p in c) for c in CONFIGS]


@pytest.fixture(params=CONFIGS, ids=IDS)
def saved(request, tmp_path: Path) -> tuple[BPETokenizer, Path]:
    tok = trained(*request.param)
    save_tokenizer(tok, tmp_path)
    return tok, tmp_path / "tokenizer.json"


# ---------------------------------------------------------------------- llmlab writes, HF reads


def test_hf_tokenizers_encode_and_decode_like_llmlab(saved):
    tok, path = saved
    hf = tokenizers.Tokenizer.from_file(str(path))
    for s in HARD:
        ids = tok.encode(s)
        assert hf.encode(s, add_special_tokens=False).ids == ids, s
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids), s


def test_transformers_encodes_and_decodes_like_llmlab(saved):
    tok, path = saved
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    for s in HARD:
        ids = tok.encode(s)
        assert fast(s, add_special_tokens=False)["input_ids"] == ids, s
        assert fast.decode(ids) == tok.decode(ids), s


def test_hf_matches_specials_like_llmlab_with_allowed_special_all(saved):
    """HF always matches added tokens in the text; llmlab does only when they are allowed."""
    tok, path = saved
    hf = tokenizers.Tokenizer.from_file(str(path))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    for s in [EOT, f"one{EOT}two", f" {EOT} <|pad|>{EOT}\n<|endoftext", f"{HARD[3]}{EOT}{HARD[6]}"]:
        ids = tok.encode(s, allowed_special="all")
        assert hf.encode(s).ids == ids, s
        assert fast(s, add_special_tokens=False)["input_ids"] == ids, s
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)
    assert tok.special_tokens[EOT] not in tok.encode(EOT)  # by default a special's text is text


def test_decoding_a_cut_character_gives_the_same_replacement_characters(saved):
    tok, path = saved
    hf = tokenizers.Tokenizer.from_file(str(path))
    ids = tok.encode(HARD[3] + HARD[4])
    for end in range(len(ids) + 1):
        assert hf.decode(ids[:end]) == tok.decode(ids[:end])
        assert hf.decode(ids[end:]) == tok.decode(ids[end:])


def test_the_file_has_hf_field_set_and_hf_rewrites_it_unchanged(saved):
    """HF loads our file and serializes it again to the same JSON: indistinguishable in structure."""
    tok, path = saved
    ours = json.loads(path.read_text(encoding="utf-8"))
    assert json.loads(tokenizers.Tokenizer.from_file(str(path)).to_str()) == ours

    pre = tokenizers.pre_tokenizers
    prefix_space = [pre.Metaspace(replacement=" ", prepend_scheme="always", split=False)] * tok.add_prefix_space
    reference = tokenizers.Tokenizer(tokenizers.models.BPE())
    reference.pre_tokenizer = pre.Sequence([
        *prefix_space,
        pre.Split(tokenizers.Regex("x"), behavior="isolated"),
        pre.ByteLevel(add_prefix_space=False, use_regex=False)])
    reference.decoder = tokenizers.decoders.ByteLevel()
    theirs = json.loads(reference.to_str())
    assert list(ours) == list(theirs)
    assert list(ours["model"]) == list(theirs["model"])
    assert [list(p) for p in ours["pre_tokenizer"]["pretokenizers"]] == \
        [list(p) for p in theirs["pre_tokenizer"]["pretokenizers"]]
    assert ours["decoder"] == theirs["decoder"]


def test_round_trip_keeps_everything(saved):
    tok, path = saved
    back = load_tokenizer(path.parent)
    assert back.vocab == tok.vocab
    assert back.merges == tok.merges
    assert back.special_tokens == tok.special_tokens
    assert back.pre_tokenizer == tok.pre_tokenizer
    assert back.pre_tokenizer.name == tok.pre_tokenizer.name
    assert (back.normalizer, back.add_prefix_space, back.ignore_merges) == \
        (tok.normalizer, tok.add_prefix_space, tok.ignore_merges)
    for s in [*HARD, f"a{EOT}b"]:
        assert back.encode(s, allowed_special="all") == tok.encode(s, allowed_special="all")


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=60), config=st.sampled_from(CONFIGS))
def test_random_text_encodes_like_hf(tmp_path_factory, text, config):
    """Any text without lone surrogates (they have no UTF-8), in every configuration.

    Text whose normalization differs is left out: HF's NFC/NFKC tables are older than
    Python 3.11's Unicode 14 and its Lowercase (Rust's) newer, so 177 code points
    normalize differently, e.g. NFKC("㋿") is "令和" in Python and "㋿" in tokenizers 0.23,
    and Lowercase("\u1c89") (Unicode 16) is "\u1c8a" in HF and unchanged in Python.
    """
    tok = trained(*config)
    hf = _hf_of(config, tmp_path_factory)
    if hf.normalizer is not None:
        assume(hf.normalizer.normalize_str(text) == NORMALIZERS[tok.normalizer](text))
    assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text)


def test_normalizers_agree_with_hf_on_the_hard_strings():
    for name, hf in [("nfc", tokenizers.normalizers.NFC()), ("nfkc", tokenizers.normalizers.NFKC()),
                     ("lowercase", tokenizers.normalizers.Lowercase())]:
        for s in [*HARD, "AΣ ΑΣ. Σ", "ﬁ ＡＢＣ ㎏ ①"]:
            assert hf.normalize_str(s) == NORMALIZERS[name](s), (name, s)


_HF_CACHE: dict[tuple, tokenizers.Tokenizer] = {}


def _hf_of(config: tuple, tmp_path_factory) -> tokenizers.Tokenizer:
    if config not in _HF_CACHE:
        directory = tmp_path_factory.mktemp("hf")
        save_tokenizer(trained(*config), directory)
        _HF_CACHE[config] = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    return _HF_CACHE[config]


# ---------------------------------------------------------------------- HF writes, llmlab reads


def _hf_byte_level(add_prefix_space: bool) -> tokenizers.Tokenizer:
    """GPT-2/RoBERTa style: the ByteLevelBPETokenizer recipe, specials in model.vocab, plus a non-special."""
    bl = tokenizers.implementations.ByteLevelBPETokenizer(add_prefix_space=add_prefix_space)
    bl.train_from_iterator(hard_corpus(), vocab_size=800, min_frequency=2, special_tokens=[EOT, "<pad>"],
                           show_progress=False)
    bl.add_tokens(["<|user|>"])
    return bl._tokenizer


def _hf_models_bpe() -> tokenizers.Tokenizer:
    """Tokenizer(models.BPE()) with ByteLevel(use_regex=True) and an NFKC normalizer."""
    t = tokenizers.Tokenizer(tokenizers.models.BPE())
    t.normalizer = tokenizers.normalizers.NFKC()
    t.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    t.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=800, special_tokens=[EOT], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(hard_corpus(), trainer=trainer)
    return t


def _hf_llama3_style() -> tokenizers.Tokenizer:
    """Sequence[Split(cl100k), ByteLevel(use_regex=False)] with ignore_merges, specials after the merges."""
    from llmlab.tokenizers.pre_tokenizers import CL100K

    t = tokenizers.Tokenizer(tokenizers.models.BPE(ignore_merges=True))
    t.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(CL100K), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=800, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(hard_corpus(), trainer=trainer)
    t.add_special_tokens([EOT, "<|eot_id|>"])
    return t


HF_MADE = {"bytelevel-prefix": lambda: _hf_byte_level(True), "bytelevel": lambda: _hf_byte_level(False),
           "models-bpe-nfkc": _hf_models_bpe, "llama3-style": _hf_llama3_style}


@pytest.fixture(params=list(HF_MADE), scope="module")
def hf_made(request, tmp_path_factory) -> tuple[tokenizers.Tokenizer, Path]:
    hf = HF_MADE[request.param]()
    path = tmp_path_factory.mktemp(request.param) / "tokenizer.json"
    hf.save(str(path))
    return hf, path


def _assert_same_as_hf(tok: BPETokenizer, hf: tokenizers.Tokenizer) -> None:
    for s in [*HARD, f"{EOT}x", f"a <|user|> b{EOT}{HARD[3]}"]:
        ids = tok.encode(s, allowed_special="all")
        assert hf.encode(s, add_special_tokens=False).ids == ids, s
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids), s


def test_files_hf_wrote_encode_like_hf(hf_made):
    hf, path = hf_made
    tok = load_tokenizer(path)
    assert tok.vocab_size == hf.get_vocab_size(with_added_tokens=True)
    _assert_same_as_hf(tok, hf)


def test_old_merges_format_loads_the_same(hf_made, tmp_path):
    hf, path = hf_made
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data["model"]["merges"][0], list)
    data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]  # ["Ġ", "t"] -> "Ġ t"
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data), encoding="utf-8")
    tok = load_tokenizer(old)
    assert tok.merges == load_tokenizer(path).merges
    _assert_same_as_hf(tok, hf)


def test_hf_file_saved_again_by_llmlab_still_encodes_like_hf(hf_made, tmp_path):
    hf, path = hf_made
    save_tokenizer(load_tokenizer(path), tmp_path)
    _assert_same_as_hf(load_tokenizer(tmp_path), hf)
    again = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for s in HARD:
        assert again.encode(s).ids == hf.encode(s).ids


# ---------------------------------------------------------------------- malformed files


def _base() -> dict:
    return json.loads((_saved_gpt2() / "tokenizer.json").read_text(encoding="utf-8"))


@cache
def _saved_gpt2() -> Path:
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="llmlab-hf-io-"))
    save_tokenizer(trained("gpt2"), directory)
    return directory


def _set(path: str, value):
    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[int(key)] if isinstance(data, list) else data[key]
        if value is _DELETE:
            del data[last]
        else:
            data[last] = value
    return edit


_DELETE = object()


def _sentencepiece_vocab(data: dict) -> None:
    data["model"]["vocab"]["▁the"] = 5000


def _merge_not_in_vocab(data: dict) -> None:
    data["model"]["merges"].insert(0, ["Ġzq", "x"])


def _merge_makes_added_token(data: dict) -> None:
    data["added_tokens"].append({"id": data["model"]["vocab"]["Ġt"], "content": "Ġt", "special": False})


def _missing_byte(data: dict) -> None:
    del data["model"]["vocab"]["A"]
    data["model"]["merges"] = [m for m in data["model"]["merges"] if "A" not in "".join(m)]


CORRUPT = {
    "top-level-list": (lambda data: data.clear(), r"top level: not a JSON object"),
    "model-type": (_set("model.type", "WordLevel"), r"model\.type: 'WordLevel'"),
    "byte-fallback": (_set("model.byte_fallback", True), r"model\.byte_fallback"),
    "subword-prefix": (_set("model.continuing_subword_prefix", "##"), r"model\.continuing_subword_prefix"),
    "dropout": (_set("model.dropout", 0.1), r"model\.dropout"),
    "missing-vocab": (_set("model.vocab", _DELETE), r"model\.vocab: missing"),
    "sentencepiece-token": (_sentencepiece_vocab, r"model\.vocab: token '▁the'.*byte-level"),
    "missing-byte": (_missing_byte, r"model\.vocab: .*256 bytes"),
    "merge-not-in-vocab": (_merge_not_in_vocab, r"model\.merges\[0\]: token 'Ġzq' is not in model\.vocab"),
    "merge-malformed": (_set("model.merges", ["a b c"]), r"model\.merges\[0\]"),
    "pre-tokenizer-type": (_set("pre_tokenizer", {"type": "Whitespace"}), r"pre_tokenizer: type 'Whitespace'"),
    "pre-tokenizer-null": (_set("pre_tokenizer", None), r"pre_tokenizer: missing"),
    "split-string": (_set("pre_tokenizer.pretokenizers", [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]),
        r"pre_tokenizer: Split pattern"),
    "normalizer-type": (_set("normalizer", {"type": "BertNormalizer"}), r"normalizer: type 'BertNormalizer'"),
    "normalizer-sequence": (_set("normalizer", {"type": "Sequence", "normalizers": [
        {"type": "NFC"}, {"type": "Lowercase"}]}), r"normalizer: the Sequence"),
    "added-token": (_set("added_tokens", [{"id": 3}]), r"added_tokens\[0\]"),
    "merge-makes-added-token": (_merge_makes_added_token, r"model\.merges\[\d+\]: token 'Ġt' is an added token"),
    "split-regex": (_set("pre_tokenizer.pretokenizers.0.pattern", {"Regex": "(?<x"}), r"pre_tokenizer: Split .*compile"),
    "pre-tokenizer-step": (_set("pre_tokenizer.pretokenizers", [3]), r"pre_tokenizer: type None"),
    "added-token-id-clash": (_set("added_tokens", [{"id": 300, "content": "<x>", "special": True}]),
                             r"model\.vocab: .* has id 300, which the added token '<x>' has"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_malformed_files_name_the_field(name, tmp_path):
    edit, match = CORRUPT[name]
    data = _base()
    edit(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data if data else []), encoding="utf-8")
    with pytest.raises(UserError, match=match) as err:
        load_tokenizer(tmp_path)
    assert "\n" not in str(err.value)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", ', encoding="utf-8")
    with pytest.raises(UserError, match=r"tokenizer\.json: not JSON"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        load_tokenizer(tmp_path / "nowhere")


# ---------------------------------------------------------------------- vocab.txt


def test_vocab_txt_lists_every_token(tmp_path):
    tok = trained("gpt2")
    save_tokenizer(tok, tmp_path)
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == tok.vocab_size
    assert lines[0] == "0\t<0x00>\t-"
    assert lines[10] == "10\t<0x0A>\t-"
    assert lines[32] == "32\t␣\t-"
    assert lines[65] == "65\tA\t-"
    assert lines[0xC3] == "195\t<0xC3>\t-"
    first, second = tok.merges[0]
    assert lines[256] == f"256\t{visible(first + second)}\t0"
    assert lines[-2:] == [f"998\t{EOT}\tspecial", "999\t<|pad|>\tspecial"]
    assert all(len(line.split("\t")) == 3 for line in lines)
