"""Vocabulary extension of a byte-level BPE: new tokens for a domain, every existing id unchanged.

Two ways to choose the new tokens, both as new merges appended after the old ones:

    learn_domain_merges(tok, domain_text, 100)   # continue BPE training on the domain corpus
    merges_for_tokens(tok, ["kubectl", "ℏω"])     # given strings, each built by a chain of merges

    continue training: the domain's chunks start as the tokenizer encodes them today, then the
    most frequent adjacent pair (weighted by chunk count) is merged, again and again:
        "kubectl" -> k ub ect l -> kub ect l -> kubect l -> kubectl   (3 new tokens)
    a given token: its current pieces merged left to right, a b c -> ab c -> abc (intermediate
    pieces become tokens too, unless they already are)

Because every new merge ranks after every old one, text that no new merge applies to encodes
exactly as before, and old ids never move: new tokens take the ids after the largest id in
use (special tokens included). `extend_bpe` builds the extended tokenizer; `save` writes it as
tokenizer.json, which HF tokenizers loads with identical encodings (tested).

Left out: extending WordPiece or Unigram vocabularies, tokens that would cross a
pre-tokenizer boundary (they could never be produced: refused), and re-training embeddings
for the new ids (the model side of extension).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from llmlab.errors import UserError
from llmlab.tokenizers.bpe import BPETokenizer, merge_pair
from llmlab.tokenizers.normalizers import NORMALIZERS


def learn_domain_merges(tok: BPETokenizer, domain: str, num_tokens: int, *,
                        min_frequency: int = 2) -> list[tuple[bytes, bytes]]:
    """Up to `num_tokens` merges that each make a new token, learned on `domain` from where `tok` leaves off.

    Ties: the pair with the larger count wins, then the smaller (left, right) bytes. A pair whose
    merged bytes are already a token also becomes a merge (the domain needs it to reach that
    token) without counting as a new token. Stops early when no pair occurs `min_frequency` times.
    """
    if num_tokens < 0:
        raise UserError(f"num_tokens must be >= 0, got {num_tokens}")
    chunks = Counter(tok.pre_tokenizer.split(NORMALIZERS[tok.normalizer](domain)))
    words = [_pieces(tok, w) for w in chunks]
    freqs = list(chunks.values())
    known = set(tok.vocab)
    merges: list[tuple[bytes, bytes]] = []
    new_tokens = 0
    current = tok
    while new_tokens < num_tokens:
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, f in zip(words, freqs, strict=True):
            for pair in pairwise(word):
                pairs[pair] += f
        if not pairs:
            break
        (a, b), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < max(1, min_frequency):
            break
        merges.append((a, b))
        if a + b not in known:
            known.add(a + b)
            new_tokens += 1
        # subtle: the new token may enable old merges (lower ranks) next to it, so the words that
        # hold the pair are re-encoded with the extended tokenizer rather than merged in place.
        current = extend_bpe(tok, merges)
        words = [_pieces(current, w) if len(merge_pair(word, (a, b), a + b)) < len(word) else word
                 for w, word in zip(chunks, words, strict=True)]
    return merges


def _pieces(tok: BPETokenizer, chunk: str) -> list[bytes]:
    return [tok.token_bytes(i) for i in tok.encode_bytes(chunk.encode("utf-8"))]


def merges_for_tokens(tok: BPETokenizer, tokens: Sequence[str]) -> list[tuple[bytes, bytes]]:
    """Merges that make each of `tokens` one token, given after `tok`'s own merges."""
    merges: list[tuple[bytes, bytes]] = []
    current = tok
    for token in tokens:
        if not token:
            raise UserError("an extension token is the empty string")
        chunks = current.pre_tokenizer.split(token)
        if chunks != [token]:
            raise UserError(f"token {token!r} spans pre-tokenizer chunks {chunks}; it could never be produced")
        # re-encoded after each merge: a new piece may enable old merges next to it
        while len(pieces := _pieces(current, token)) > 1:
            merges.append((pieces[0], pieces[1]))
            current = extend_bpe(tok, merges)
    return merges


def extend_bpe(tok: BPETokenizer, merges: Sequence[tuple[bytes, bytes]]) -> BPETokenizer:
    """`tok` with `merges` appended; new tokens get ids after the largest id in use, in merge order."""
    vocab = dict(tok.vocab)
    next_id = max([*vocab.values(), *tok.special_tokens.values()]) + 1
    old = set(tok.merges)
    for a, b in merges:
        if (a, b) in old:  # a second rank for one pair would change how old text encodes
            raise UserError(f"({a!r}, {b!r}) is already a merge")
        for part in (a, b):
            if part not in vocab:
                raise UserError(f"merge ({a!r}, {b!r}): {part!r} is not a token")
        if a + b not in vocab:
            vocab[a + b] = next_id
            next_id += 1
    return BPETokenizer(vocab, [*tok.merges, *merges], special_tokens=tok.special_tokens,
                        pre_tokenizer=tok.pre_tokenizer, normalizer=tok.normalizer,
                        add_prefix_space=tok.add_prefix_space, ignore_merges=tok.ignore_merges)


@dataclass(frozen=True)
class ExtensionGain:
    new_tokens: int
    tokens_before: int
    tokens_after: int
    bytes_per_token_before: float
    bytes_per_token_after: float

    @property
    def fewer_tokens(self) -> float:
        """Share of the domain's tokens saved: 1 - after / before."""
        return 1 - self.tokens_after / self.tokens_before if self.tokens_before else 0.0


def extension_gain(before: BPETokenizer, after: BPETokenizer, text: str) -> ExtensionGain:
    n_bytes = len(text.encode("utf-8"))
    t0, t1 = len(before.encode(text)), len(after.encode(text))
    return ExtensionGain(new_tokens=after.vocab_size - before.vocab_size, tokens_before=t0, tokens_after=t1,
                         bytes_per_token_before=n_bytes / t0 if t0 else 0.0,
                         bytes_per_token_after=n_bytes / t1 if t1 else 0.0)
