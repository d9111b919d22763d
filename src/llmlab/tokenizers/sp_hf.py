"""The normalizer and Metaspace pre-tokenizer of SentencePiece-style HF tokenizer.json files, run as HF runs them.

What transformers' converters write for SentencePiece models (Llama 2, Mistral v1, T5, ALBERT, XLNet):

    Llama (legacy):  normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], pre_tokenizer null
    Llama (newer):   normalizer null, pre_tokenizer Metaspace("▁", prepend_scheme "first", split false)
    from a .model:   normalizer Sequence[Precompiled(charsmap), Replace(/\\A +| +\\z/, ""), Replace(/ {2,}/, " "),
                     Replace(" ", "▁"), Replace(/\\A▁/, "▁▁")], pre_tokenizer Metaspace("▁", "always", split false)

`HFTextPipeline` applies such a normalizer Sequence step by step (Precompiled: charsmap.py's HF
variant; Replace with a string or a regex; Prepend, which adds nothing to empty text; NFC/NFKC/
Lowercase; Strip) and then the Metaspace: " " -> "▁", and "▁" in front (prepend_scheme "always",
or "first": not in front of text that follows a special token) unless it starts with "▁" already. It returns the
text the model segments; `split` says whether Metaspace cuts it before every "▁".
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import regex

from llmlab.errors import UserError
from llmlab.tokenizers.charsmap import Charsmap
from llmlab.tokenizers.normalizers import HF_NORMALIZERS, NORMALIZERS
from llmlab.tokenizers.sp_text import SPACE


class HFTextPipeline:
    """text -> the text an HF SentencePiece-style model segments; plain data, so it pickles."""

    def __init__(self, steps: list[tuple[str, Any]], *, prepend: bool, split: bool, first_only: bool = False) -> None:
        self.steps = steps
        self.prepend = prepend
        self.split = split
        self.first_only = first_only  # prepend_scheme "first": no "▁" in front of text after a special token

    def __call__(self, text: str, *, at_start: bool = True) -> str:
        for kind, arg in self.steps:
            if not text:
                return ""
            if kind == "precompiled":
                text = arg.hf_precompiled(text)
            elif kind == "replace":
                pattern, content = arg
                text = text.replace(pattern, content) if isinstance(pattern, str) else pattern.sub(content, text)
            elif kind == "prepend":
                text = arg + text
            elif kind == "strip":
                left, right = arg
                text = text.lstrip() if left else text
                text = text.rstrip() if right else text
            else:
                text = NORMALIZERS[arg](text)
        if not text:
            return ""
        text = text.replace(" ", SPACE)
        prepend = self.prepend and (at_start or not self.first_only)
        return SPACE + text if prepend and not text.startswith(SPACE) else text

    @property
    def charsmap(self) -> Charsmap | None:
        return next((arg for kind, arg in self.steps if kind == "precompiled"), None)


def read_pipeline(normalizer: Any, pre_tokenizer: Any) -> HFTextPipeline:
    """The pipeline of a tokenizer.json's `normalizer` and `pre_tokenizer` fields; UserErrors name the field."""
    steps = [_step(step) for step in _flatten(normalizer, "normalizers", "normalizer")]
    metaspace = [s for s in _flatten(pre_tokenizer, "pretokenizers", "pre_tokenizer")]
    if not metaspace:
        return HFTextPipeline(steps, prepend=False, split=False)
    if len(metaspace) != 1 or metaspace[0].get("type") != "Metaspace" or metaspace[0].get("replacement") != SPACE:
        raise UserError("pre_tokenizer: llmlab reads a SentencePiece-style file with no pre-tokenizer or one "
                        "Metaspace('▁')")
    scheme = metaspace[0].get("prepend_scheme", "always")
    if scheme not in ("always", "first", "never"):
        raise UserError(f"pre_tokenizer: Metaspace prepend_scheme {scheme!r} is not one of always, first, never")
    return HFTextPipeline(steps, prepend=scheme != "never", split=bool(metaspace[0].get("split", True)),
                          first_only=scheme == "first")


def _flatten(spec: Any, key: str, field: str) -> list[dict[str, Any]]:
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise UserError(f"{field}: not an object")
    if spec.get("type") != "Sequence":
        return [spec]
    return [step for inner in spec.get(key) or [] for step in _flatten(inner, key, field)]


def _step(step: dict[str, Any]) -> tuple[str, Any]:
    kind = step.get("type")
    if kind == "Precompiled":
        try:
            blob = base64.b64decode(step.get("precompiled_charsmap") or "", validate=True)
        except (binascii.Error, TypeError):
            raise UserError("normalizer: Precompiled precompiled_charsmap is not base64") from None
        return "precompiled", Charsmap.from_blob(blob)
    if kind == "Replace":
        pattern = step.get("pattern") or {}
        content = step.get("content")
        if not isinstance(content, str):
            raise UserError("normalizer: Replace without a string content")
        if isinstance(pattern.get("String"), str):
            return "replace", (pattern["String"], content)
        if isinstance(pattern.get("Regex"), str):
            # Oniguruma's \z (the very end) is Python's \Z; a replacement is literal text in HF
            source = pattern["Regex"].replace(r"\z", r"\Z")
            try:
                return "replace", (regex.compile(source), content.replace("\\", "\\\\"))
            except regex.error as e:
                raise UserError(f"normalizer: Replace regex {pattern['Regex']!r} does not compile: {e}") from None
        raise UserError(f"normalizer: Replace pattern {pattern!r} is neither a String nor a Regex")
    if kind == "Prepend" and isinstance(step.get("prepend"), str):
        return "prepend", step["prepend"]
    if kind == "Strip":
        return "strip", (bool(step.get("strip_left", False)), bool(step.get("strip_right", True)))
    if kind in HF_NORMALIZERS:
        return "named", HF_NORMALIZERS[kind]
    raise UserError(f"normalizer: {kind!r} is not supported in a SentencePiece-style file (Precompiled, Replace, "
                    "Prepend, Strip, NFC, NFKC, Lowercase)")
