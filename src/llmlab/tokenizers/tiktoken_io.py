"""An llmlab byte-level BPE tokenizer as a `tiktoken.Encoding`, when it can be one exactly.

tiktoken keeps no merge list. Its `mergeable_ranks` maps each token's bytes to a rank,
which is also the token's id, and it encodes a chunk like this (tiktoken's
`_educational.py`):

    1. if the whole chunk is a token, that token           (HF's ignore_merges)
    2. else start from the bytes and repeatedly join the adjacent pair whose joined
       bytes have the lowest rank, until no joined pair is a token

llmlab joins only the pairs of its merge list, ranked by merge. The two agree when ranking
a merge by the id of the token it makes keeps the merge order, so we check, and raise
otherwise:
  - the ids of the merged tokens never decrease in merge order. Several merges may make one
    token (Meta's Llama 3 file, and every file HF's tiktoken converter writes, list each token
    once per way to split it into two tokens): they sit together, and the Encoding ranks them
    all by that token's id, as llmlab does (rank = id)
  - every token is a single byte or made by a merge (tiktoken would build any token)
  - without ignore_merges, every token encodes to itself (step 1 changes nothing)
Not checked: tiktoken would also join a token's bytes split another way (a + bc, where
the only merge is ab + c). A merge list learned by BPE training never meets that case (once
b + c is merged no b is left before a c), a converter's list has every split, and a trained one
passes the checks (llmlab's ids are 256.. in merge order; HF's trainer numbers merges in order
too); the tests compare the encodings on hard strings and on random text (hypothesis).

Left out: normalizers and add_prefix_space, which tiktoken has no place for (UserError).
The pattern is handed over as is; where tiktoken's regex engine and HF's read it differently
(regex_engines.py) a warning says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from llmlab.errors import UserError
from llmlab.tokenizers.pre_tokenizers import PreTokenizer
from llmlab.tokenizers.regex_engines import warn_engine_differences

if TYPE_CHECKING:
    import tiktoken


class ByteLevelBPE(Protocol):
    """What the conversion reads of a byte-level BPE tokenizer: `BPETokenizer` is one. A protocol, not
    the class, because bpe.py calls this module (`BPETokenizer.to_tiktoken`)."""

    vocab: dict[bytes, int]
    merges: list[tuple[bytes, bytes]]
    special_tokens: dict[str, int]
    pre_tokenizer: PreTokenizer
    normalizer: str
    add_prefix_space: bool
    ignore_merges: bool

    def token_bytes(self, token_id: int) -> bytes: ...

    def encode_bytes(self, data: bytes) -> list[int]: ...


def to_tiktoken(tok: ByteLevelBPE, name: str = "llmlab") -> tiktoken.Encoding:
    """The same pattern, tokens (rank = id) and special tokens as a `tiktoken.Encoding`."""
    check_tiktoken_compatible(tok)
    warn_engine_differences(tok.pre_tokenizer.pattern, "exported to tiktoken")
    import tiktoken  # lazily: an optional dependency, and a slow import

    return tiktoken.Encoding(name, pat_str=tok.pre_tokenizer.pattern, mergeable_ranks=dict(tok.vocab),
                             special_tokens=dict(tok.special_tokens))


def check_tiktoken_compatible(tok: ByteLevelBPE) -> None:
    """Raise a UserError that says why tiktoken would encode differently from `tok`."""
    if tok.normalizer != "none":
        raise UserError(f"tiktoken has no normalizer; this tokenizer normalizes with {tok.normalizer!r}")
    if tok.add_prefix_space:
        raise UserError("tiktoken cannot add a prefix space; this tokenizer has add_prefix_space")
    made_by: dict[bytes, int] = {}  # token -> its first merge
    last_id = -1
    for rank, (a, b) in enumerate(tok.merges):
        token = a + b
        made_by.setdefault(token, rank)
        token_id = tok.vocab[token]
        if token_id < last_id:
            raise UserError(f"merge {rank} makes {token!r} with id {token_id}, below the id {last_id} of an earlier "
                            "merge; tiktoken ranks merges by id, so ids must not decrease in merge order")
        last_id = token_id
    for token, token_id in tok.vocab.items():
        if len(token) > 1 and token not in made_by:
            raise UserError(f"token {token!r} (id {token_id}) is made by no merge; tiktoken would build it anyway")
    if not tok.ignore_merges:
        for token in made_by:
            if (parts := [tok.token_bytes(i) for i in tok.encode_bytes(token)]) != [token]:
                raise UserError(f"token {token!r} encodes to {parts} by its merges; tiktoken takes a chunk that is "
                                "a token whole (set ignore_merges to match)")

