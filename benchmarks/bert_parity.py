"""BERT WordPiece parity with HF `tokenizers`: strings, the code-point sweep, and code points alone.

    .venv/bin/python benchmarks/bert_parity.py            # about ten seconds a setting on one core

For each BertNormalizer setting, a tokenizer.json over llmlab.tokenizers.bert_reference's
vocabulary (every character of planes 0, 1 and 14, alone and with "##") is read by llmlab and by
HF; then: the held-out strings of sp_reference.parity_texts() (prose, seven scripts, code-mixed
lines, edge cases) whose ids and decoded text equal HF's, out of all; the same for the 48 sweep
strings; and the code points c for which "a" + c + "b" gets other ids. The exit status is 1 when
anything differs. Results: benchmarks/results/bert_parity.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import tokenizers
from llmlab.bench.harness import markdown_table, write_results
from llmlab.tokenizers.bert_reference import POINTS, SWEEP, char_vocab, mismatches
from llmlab.tokenizers.bert_text import BertNormalizer
from llmlab.tokenizers.hf_io import load_tokenizer
from llmlab.tokenizers.sp_reference import parity_texts
from llmlab.tokenizers.wordpiece import WordPieceTokenizer

RESULTS = Path(__file__).parent / "results"
SETTINGS = {  # name: BertNormalizer keywords
    "uncased": {},
    "cased": {"lowercase": False},
    "cased, strip_accents": {"lowercase": False, "strip_accents": True},
    "uncased, keep accents": {"strip_accents": False},
    "uncased, no CJK split": {"handle_chinese_chars": False},
    "uncased, no clean_text": {"clean_text": False},
    "cased, no clean_text, no CJK split": {"lowercase": False, "clean_text": False, "handle_chinese_chars": False},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULTS / "bert_parity.md")
    args = parser.parse_args(argv)
    strings, alone = parity_texts(), [f"a{chr(c)}b" for c in POINTS]
    rows, clean = [], True
    for name, options in SETTINGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            WordPieceTokenizer(char_vocab(), normalizer=BertNormalizer(**options)).save(tmp)
            ours = load_tokenizer(Path(tmp) / "tokenizer.json")
            hf = tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
        bad_strings, bad_sweep = mismatches(ours, hf, strings), mismatches(ours, hf, SWEEP)
        expected = [e.ids for e in hf.encode_batch(alone, add_special_tokens=False)]
        bad_points = sum(ours.encode(s, allowed_special="all") != ids for s, ids in zip(alone, expected, strict=True))
        clean &= not (bad_strings or bad_sweep or bad_points)
        rows.append([name, f"{len(strings) - len(bad_strings)}/{len(strings)}", f"{len(SWEEP) - len(bad_sweep)}/{len(SWEEP)}",
                     f"{bad_points:,}"])
        print(*rows[-1], sep=" | ", flush=True)
    table = (f"## BERT WordPiece parity with HF tokenizers {tokenizers.__version__}\n\n"
             + markdown_table(["setting", "strings equal", "sweep strings equal", "code points differing"], rows,
                              align="lrrr") + "\n")
    write_results(args.output, table)
    print(table)
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
