"""The Unigram trainer's output is pinned: speed-ups must not change the model.

golden/unigram_1000.json holds the learned pieces and scores (ids 257.. of a vocab of 1,000 with
byte fallback) that the single-threaded trainer of commit e3819cb gave on `training_texts(400_000)`:
4 EM rounds, 3 prunings, scripts, digits and unknown characters.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from llmlab.tokenizers.sp_reference import training_texts
from llmlab.tokenizers.unigram_train import train_unigram

GOLDEN = Path(__file__).parent / "golden" / "unigram_1000.json"


@cache
def texts() -> tuple[str, ...]:
    return tuple(training_texts(chars=400_000))


def test_trainer_output_is_unchanged():
    """Pieces, their order and their scores, exactly (the scores as `finalize` rounds them, 15 digits)."""
    tok = train_unigram(texts(), 1000, byte_fallback=True, normalizer="none")
    golden = [(p, s) for p, s in json.loads(GOLDEN.read_text(encoding="utf-8"))]
    assert tok.pieces[257:] == golden
