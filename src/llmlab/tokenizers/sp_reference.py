"""Reference SentencePiece artifacts, built at run time by the reference libraries themselves.

Nothing can be downloaded here, so the parity suite (tests/tokenizers/test_sentencepiece_parity.py)
and the benchmark (benchmarks/bench_sentencepiece.py) train small models with
`sentencepiece.SentencePieceTrainer` and convert them with transformers' own converter:

    model = train_model("bpe", vocab_size=1000, **LLAMA_OPTIONS)
    data = hf_json(model, "llama")     # LlamaTokenizer's file (Metaspace "first", BPE merges, byte fallback)
    data = hf_json(model, "auto")      # AutoTokenizer's file (Precompiled charsmap + Replace steps)

and check them on `parity_texts()` (prose, code, seven scripts, code-mixed lines, whitespace and
edge cases) and `codepoint_sweep()` (every assigned-or-not code point of planes 0, 1 and 14 but
surrogates, in chunks of 64, with the examples the issue names).
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.data.multilingual import LANGUAGES, code_mixed, language_corpus

EDGE_CASES = [
    "", " ", "  ", "\t", "\n", "Hello world", "  two leading, two  inner and trailing  ", " leading", "trailing ",
    "a▁b", "▁", "▁▁x", "x ▁ y", "end▁", "ꟳ 🅬 ㋿", "ﬁ ﬂ ² ½ Ⅻ ｶﾀｶﾅ ＡＢＣ", "e\u0301 cafe\u0301 n\u0303",
    "zero\u200bwidth\u00a0nbsp\u3000ideographic", "tabs\tand\nnewlines\n\nhere", "\x00\x01\x7f control",
    "emoji 👍🏽 family 👨‍👩‍👧 and 🤖", "x" * 300, "0000 1234567890 3.14159", "<unk> <s> </s> <0x41>",
    "def f(x):\n    return {'a': [1, 2]}  # comment", "日本語のテキスト、中文字符 한국어",
]


# Llama 2's tokenizer.model trainer settings (its trainer_spec), for Llama-style BPE models
LLAMA_OPTIONS = {"byte_fallback": True, "normalization_rule_name": "identity", "remove_extra_whitespaces": False,
                 "allow_whitespace_only_pieces": True, "split_digits": True}


def training_texts(chars: int = 60_000, seed: int = 0) -> list[str]:
    """English prose lines, every language of llmlab.data.multilingual, code-mixed lines and indented
    code (so that whitespace-only pieces such as "▁▁▁▁" are learnt where allowed)."""
    docs = pretrain_documents(GenerateConfig(kind="pretrain", chars=chars, seed=seed))
    lines = [line for d in docs for line in d.splitlines() if line.strip()]
    for lang in LANGUAGES:
        lines += language_corpus(lang, chars // 8, seed=seed).splitlines()
    code = [" " * (4 * (n % 4)) + f"{stmt} value_{n}" for n, stmt in enumerate(["return", "if", "for x in", "yield"]
                                                                            * (chars // 2000))]
    return lines + code_mixed(200, seed=seed) + code


def parity_texts(seed: int = 1) -> list[str]:
    """Held-out strings: other seeds than `training_texts`, plus EDGE_CASES."""
    docs = pretrain_documents(GenerateConfig(kind="pretrain", chars=20_000, seed=seed))
    texts = [line for d in docs for line in d.splitlines()][:150]
    for lang in LANGUAGES:
        texts += language_corpus(lang, 1500, seed=seed).splitlines()[:15]
    return [*EDGE_CASES, *texts, *code_mixed(40, seed=seed)]


def codepoint_sweep(chunk: int = 64) -> list[str]:
    """Planes 0, 1 and 14 (surrogates left out: they have no UTF-8), `chunk` code points per string."""
    points = [c for plane in (0, 1, 14) for c in range(plane << 16, (plane + 1) << 16) if not 0xD800 <= c < 0xE000]
    return [" ".join(chr(c) for c in points[i:i + chunk]) if i % (2 * chunk) else
            "".join(chr(c) for c in points[i:i + chunk]) for i in range(0, len(points), chunk)]


def train_model(model_type: str, *, vocab_size: int, texts: list[str] | None = None, num_threads: int = 1,
                **options: Any) -> bytes:
    """A SentencePiece model trained by sentencepiece on `texts` (default: `training_texts()`); one
    thread unless asked, so that the model does not depend on the machine."""
    import sentencepiece as spm  # the reference library, needed only here

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts if texts is not None else training_texts()),
                                   model_writer=buf, vocab_size=vocab_size, model_type=model_type, minloglevel=2,
                                   num_threads=num_threads, **options)
    return buf.getvalue()


def hf_json(model: bytes, converter: str) -> dict[str, Any]:
    """The tokenizer.json that transformers writes for `model`: converter "llama" (LlamaTokenizer, the
    Llama 2 / Mistral v1 layout) or "auto" (AutoTokenizer: the generic SentencePiece conversion)."""
    import transformers  # the reference converter, needed only here

    cls = {"llama": transformers.LlamaTokenizer, "auto": transformers.AutoTokenizer}[converter]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(model)
        tok = cls.from_pretrained(tmp)
        tok.save_pretrained(Path(tmp) / "out")
        return json.loads((Path(tmp) / "out" / "tokenizer.json").read_text(encoding="utf-8"))
