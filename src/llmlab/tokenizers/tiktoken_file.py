"""tiktoken `.tiktoken` rank files: read them into llmlab's byte-level BPE, and write them.

A rank file is one line per token, `base64(token bytes) SPACE rank`, sorted by rank (tiktoken's
`load_tiktoken_bpe` / `dump_tiktoken_bpe`; Meta's Llama 3 `tokenizer.model` is one too):

    IQ== 0          b"!"
    IHQ= 256        b" t"

The rank is the token's id and its priority: tiktoken keeps no merge list. It encodes a chunk
by taking it whole if it is a token, else by starting from its bytes and joining, again and
again, the adjacent pair whose joined bytes have the lowest rank (tiktoken's `_educational.py`).

llmlab's BPE joins only the pairs of a merge list, so reading a rank file rebuilds one, the way
that algorithm implies: a token of rank r is made by the one pair of lower-ranked tokens that the
BPE of its own bytes reaches when only ranks below r may join (`merges_from_ranks`):

    ranks: a 0, b 1, c 2, ab 3, abc 4
    "ab":  a b                -> join a+b (rank 3 is not below 3: stop before it) -> (a, b)
    "abc": a b c -> ab c      -> (ab, c)      merges [(a, b), (ab, c)], in rank order

A token whose bytes end in more or fewer than two parts is made by no pair and cannot be a BPE
token; such a file is refused. The tokenizer gets `ignore_merges` (tiktoken's whole-chunk step)
and the ranks as ids. Not reproduced: tiktoken joins *any* adjacent pair that forms a token, not
only the rebuilt pair, so a text whose BPE reaches a + bc where the merge is ab + c would differ;
a BPE-trained rank file never has that state (the tests compare the encodings with tiktoken).

A rank file has no pattern and no special tokens: `load_tiktoken` takes them by encoding name
(`cl100k_base`: the public constants of tiktoken_ext/openai_public.py, also inferred from the file
name) or as `pattern=` and `special_tokens=`. `save_tiktoken` writes the ranks of a tokenizer that
`to_tiktoken` accepts (its pattern and specials are not part of the format).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path

from llmlab.errors import UserError
from llmlab.files import write_text_atomic
from llmlab.tokenizers import fastbpe
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.pre_tokenizers import ENCODING_PATTERNS, PreTokenizer
from llmlab.tokenizers.tiktoken_io import check_tiktoken_compatible

_EOT, _FIM = "<|endoftext|>", ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>")
# the special tokens of OpenAI's public encodings (tiktoken_ext/openai_public.py)
ENCODING_SPECIALS: dict[str, dict[str, int]] = {
    "gpt2": {_EOT: 50256},
    "r50k_base": {_EOT: 50256},
    "p50k_base": {_EOT: 50256},
    "p50k_edit": {_EOT: 50256, **dict(zip(_FIM, range(50281, 50284), strict=True))},
    "cl100k_base": {_EOT: 100257, **dict(zip(_FIM, range(100258, 100261), strict=True)), "<|endofprompt|>": 100276},
    "o200k_base": {_EOT: 199999, "<|endofprompt|>": 200018},
}


def read_ranks(path: str | Path) -> dict[bytes, int]:
    """token bytes -> rank of a .tiktoken file; a malformed line is a one-line error naming file:line."""
    path = Path(path)
    ranks: dict[bytes, int] = {}
    lines = [(n, line) for n, line in enumerate(path.read_bytes().splitlines(), 1) if line.strip()]
    for n, line in lines:
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            ranks[base64.b64decode(parts[0], validate=True)] = int(parts[1])
        except (ValueError, binascii.Error):
            raise UserError(f"{path}:{n}: not 'base64-token rank': {line[:60]!r}") from None
    if not ranks:
        raise UserError(f"{path}: no tokens in the rank file")
    if len(ranks) != len(lines) or len(set(ranks.values())) != len(ranks):
        _refuse_repeats(path, lines)
    return ranks


def _refuse_repeats(path: Path, lines: list[tuple[int, bytes]]) -> None:
    """The UserError for the first token or rank that a rank file gives twice, naming both lines."""
    token_line: dict[bytes, int] = {}
    rank_line: dict[int, int] = {}
    for n, line in lines:
        token, rank = base64.b64decode(line.split()[0], validate=True), int(line.split()[1])
        if token in token_line:
            raise UserError(f"{path}:{n}: token {token!r} is already on line {token_line[token]}")
        if rank in rank_line:
            raise UserError(f"{path}:{n}: rank {rank} is already on line {rank_line[rank]}")
        token_line[token], rank_line[rank] = n, n


def bpe_parts(data: bytes, ranks: Mapping[bytes, int], max_rank: int | None = None) -> list[bytes]:
    """tiktoken's BPE of `data`: join the adjacent pair of lowest rank (below `max_rank`), leftmost first.

    >>> bpe_parts(b"abc", {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"abc": 4}, max_rank=4)
    [b'ab', b'c']
    """
    parts = [data[i:i + 1] for i in range(len(data))]
    while len(parts) > 1:
        best, best_rank = -1, None
        for i, (a, b) in enumerate(pairwise(parts)):
            rank = ranks.get(a + b)
            if rank is not None and (max_rank is None or rank < max_rank) and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best_rank is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def _split(parts: list[bytes]) -> int:
    """Where a token's BPE parts split it when they are a pair, else -(number of parts): merge_splits' code."""
    return len(parts[0]) if len(parts) == 2 else -len(parts)


def merges_from_ranks(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list, in rank order, that makes each token of several bytes (see the module docstring)."""
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise UserError(f"a byte-level rank file holds all 256 bytes; {len(missing)} are missing, "
                        f"e.g. byte 0x{missing[0]:02X}")
    merges: list[tuple[bytes, bytes]] = []
    splits = fastbpe.merge_splits(ranks) or {token: _split(bpe_parts(token, ranks, max_rank=rank))
                                               for token, rank in ranks.items() if len(token) > 1}
    for token, rank in sorted(ranks.items(), key=lambda t: t[1]):
        if len(token) < 2:
            continue
        if (k := splits[token]) < 0:
            raise UserError(f"token {token!r} (rank {rank}): the BPE of its bytes over lower ranks gives "
                            f"{-k} parts, not one pair to merge; not a BPE rank file")
        merges.append((token[:k], token[k:]))
    return merges


def load_tiktoken(path: str | Path, *, encoding: str | None = None, pattern: str | None = None,
                  special_tokens: Mapping[str, int] | None = None) -> BPETokenizer:
    """A byte-level BPE tokenizer from a .tiktoken rank file.

    The pattern and special tokens come from `encoding` (a name of ENCODING_PATTERNS; default: the
    file's name, as in `cl100k_base.tiktoken`), overridden by `pattern` and `special_tokens`.
    """
    path = Path(path)
    name = encoding or (path.stem if path.stem in ENCODING_PATTERNS else None)
    if name is not None and name not in ENCODING_PATTERNS:
        raise UserError(f"unknown encoding {name!r}; choose one of {', '.join(ENCODING_PATTERNS)} or pass pattern=")
    if pattern is None and name is None:
        raise UserError(f"{path}: a .tiktoken file holds no split pattern; name its encoding "
                        f"({', '.join(ENCODING_PATTERNS)}) or pass pattern=")
    specials = dict(special_tokens if special_tokens is not None else ENCODING_SPECIALS.get(name or "", {}))
    ranks = read_ranks(path)
    try:
        return BPETokenizer(ranks, merges_from_ranks(ranks), special_tokens=specials,
                            pre_tokenizer=PreTokenizer.from_pattern(pattern or ENCODING_PATTERNS[name or ""]),
                            ignore_merges=True)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def save_tiktoken(tok: BPETokenizer, path: str | Path) -> None:
    """Write `tok`'s ordinary tokens as a .tiktoken rank file (rank = id), atomically.

    The tokenizer must be one tiktoken encodes identically (`to_tiktoken`'s checks); the pattern
    and special tokens are not part of the format, so pass them to whoever loads the file.
    """
    check_tiktoken_compatible(tok)
    lines = (f"{base64.b64encode(token).decode('ascii')} {rank}\n"
             for token, rank in sorted(tok.vocab.items(), key=lambda t: t[1]))
    write_text_atomic(Path(path), "".join(lines))
