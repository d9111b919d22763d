"""Pretraining data: documents -> one memory-mapped token file per split -> batches chosen by step.

    documents ──tokenize once──> train.bin / val.bin (uint16, or uint32 past 65,536 ids)
                                 doc_1 <eos> doc_2 <eos> ...   (packed: no padding anywhere)
    step s ──> global sequences s*G .. s*G+G-1 of a seeded permutation of the seq_len+1 chunks

The split is a hash of each document's text (a document is in val iff blake2b(text) falls
below val_fraction), so it does not depend on the order of the input or on other documents.
Token files live in a cache folder named by a hash of the tokenizer and the input (paths,
sizes, modification times, or the built-in corpus settings): a second run with the same
tokenizer and data maps the files instead of tokenizing again.

Which sequences a step trains on is a pure function of (seed, step): resuming needs only
the step, and 1 process with global batch G sees the same sequences as N processes that
each take G / N of them (rank r takes the r-th slice).

Left out: document-boundary attention masks (a sequence that spans two documents attends
across the <eos>, as in GPT-2/nanoGPT pretraining) and streaming datasets larger than disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from llmlab.data.config import GenerateConfig
from llmlab.data.corpora import pretrain_documents
from llmlab.data.loaders import load_rows, read_text_documents
from llmlab.errors import DataError
from llmlab.files import atomic_open, write_json_atomic

if TYPE_CHECKING:
    from llmlab.tokenizers.base import Tokenizer
    from llmlab.train.config import PretrainDataConfig

_ENCODE_CHUNK = 512  # documents per encode_batch call


def is_val(text: str, fraction: float) -> bool:
    """Deterministic, order-free split: the first 8 bytes of blake2b(text) as a number in [0, 1)."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def iter_documents(cfg: PretrainDataConfig) -> Iterator[str]:
    """The user's documents (text files split at blank lines; JSONL/JSON/parquet/datasets rows with a
    "text" field), or the task world's pretraining corpus when no input is given."""
    if not cfg.input:

        yield from pretrain_documents(GenerateConfig(kind="pretrain", chars=cfg.corpus_chars))
        return

    for path in cfg.input:
        p = Path(path)
        if not p.exists():
            raise DataError(f"{path}: no such file or folder")
        if p.is_file() and p.suffix.lower() in (".txt", ".md", ".text", ""):
            yield from read_text_documents(p)
        else:
            yield from (row["text"] for row in load_rows(p, "text").rows)


def input_fingerprint(cfg: PretrainDataConfig) -> dict[str, Any]:
    """What the token files depend on, besides the tokenizer."""
    if not cfg.input:
        return {"builtin_corpus_chars": cfg.corpus_chars, "val_fraction": cfg.val_fraction}
    files = []
    for path in cfg.input:
        p = Path(path)
        if not p.exists():
            raise DataError(f"{path}: no such file or folder")
        members = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        files += [(str(q.resolve()), q.stat().st_size, q.stat().st_mtime_ns) for q in members]
    return {"files": files, "val_fraction": cfg.val_fraction}


@dataclass(frozen=True)
class TokenFile:
    path: Path
    n_tokens: int
    n_bytes: int  # UTF-8 bytes of the documents it holds, for bits per byte
    dtype: str

    def array(self) -> np.ndarray:
        if self.n_tokens == 0:  # an empty file cannot be memory-mapped; the sampler then says what is missing
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


def prepare_token_files(cfg: PretrainDataConfig, tokenizer: Tokenizer, tokenizer_json: bytes, *, eos_id: int,
                        log=print, progress=None) -> tuple[TokenFile, TokenFile]:
    """(train, val) token files, from the cache when the tokenizer and the input are unchanged."""
    fingerprint = {"tokenizer": hashlib.blake2b(tokenizer_json).hexdigest(), "eos_id": eos_id,
                   **input_fingerprint(cfg)}
    key = hashlib.blake2b(json.dumps(fingerprint, sort_keys=True).encode(), digest_size=10).hexdigest()
    folder = Path(cfg.cache_dir) / key
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        log(f"tokenized data from the cache: {folder}")
        return TokenFile(folder / "train.bin", **meta["train"]), TokenFile(folder / "val.bin", **meta["val"])
    dtype = token_dtype(tokenizer.vocab_size)
    log(f"tokenizing into {folder} ({dtype})")
    created = [d for d in (folder, *folder.parents) if not d.exists()]  # removed again if the input is bad
    try:
        counts = _write_splits(iter_documents(cfg), tokenizer, eos_id, folder, dtype, cfg.val_fraction, progress)
        if counts["train"][0] + counts["val"][0] == 0:
            raise DataError("the input holds no documents")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        for d in created[1:]:  # the cache's parent folders, innermost first, if this run made them
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    if not (counts["train"][0] and counts["val"][0]):  # one paragraph, or a few documents: split the tokens
        log(f"every document fell in one split; holding out the last {cfg.val_fraction:.0%} of the tokens as val")
        counts = _split_by_position(folder, dtype, counts, cfg.val_fraction)
    meta = {name: {"n_tokens": n, "n_bytes": b, "dtype": dtype} for name, (n, b) in counts.items()}
    write_json_atomic(meta_path, {**meta, "fingerprint": fingerprint})  # written last: marks the folder complete
    return TokenFile(folder / "train.bin", **meta["train"]), TokenFile(folder / "val.bin", **meta["val"])


def _write_splits(docs: Iterable[str], tokenizer: Tokenizer, eos_id: int, folder: Path, dtype: str,
                  val_fraction: float, progress) -> dict[str, tuple[int, int]]:
    counts = {"train": [0, 0], "val": [0, 0]}
    with atomic_open(folder / "train.bin", "wb") as train_f, atomic_open(folder / "val.bin", "wb") as val_f:
        files = {"train": train_f, "val": val_f}
        for chunk in _chunks(docs, _ENCODE_CHUNK):
            for doc, ids in zip(chunk, tokenizer.encode_batch(chunk), strict=True):
                split = "val" if is_val(doc, val_fraction) else "train"
                arr = np.asarray([*ids, eos_id], dtype=dtype)
                files[split].write(arr.tobytes())
                counts[split][0] += arr.size
                counts[split][1] += len(doc.encode("utf-8")) + 1  # + 1: the separator stands for a byte
            if progress is not None:
                progress(sum(len(d) for d in chunk))
    return {k: (n, b) for k, (n, b) in counts.items()}


def _split_by_position(folder: Path, dtype: str, counts: dict[str, tuple[int, int]],
                       val_fraction: float) -> dict[str, tuple[int, int]]:
    """Rewrite the two split files as the first (1 - val_fraction) and the last val_fraction of all the
    tokens (at least one token each); bytes are shared out in proportion, for bits per byte."""
    tokens = np.concatenate([np.fromfile(folder / f"{name}.bin", dtype=dtype) for name in ("train", "val")])
    n_val = min(max(1, round(len(tokens) * val_fraction)), len(tokens) - 1)
    n_bytes = counts["train"][1] + counts["val"][1]
    parts = {"train": tokens[: len(tokens) - n_val], "val": tokens[len(tokens) - n_val:]}
    for name, part in parts.items():
        with atomic_open(folder / f"{name}.bin", "wb") as f:
            f.write(part.tobytes())
    return {name: (len(part), round(n_bytes * len(part) / len(tokens))) for name, part in parts.items()}


def _chunks(items: Iterable[str], n: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class SequenceSampler:
    """Chunks of seq_len + 1 tokens (inputs and shifted targets), in a seeded order that depends
    only on the index: sequence i is chunk perm_e[i mod n] of epoch e = i // n."""

    def __init__(self, tokens: np.ndarray, seq_len: int, *, seed: int, shuffle: bool = True,
                 name: str = "train") -> None:
        self.tokens, self.seq_len, self.seed, self.shuffle = tokens, seq_len, seed, shuffle
        self.n_chunks = (len(tokens) - 1) // seq_len
        if self.n_chunks < 1:
            raise DataError(f"the {name} split has {len(tokens)} tokens, fewer than one sequence of "
                            f"{seq_len + 1}; give more data (or a larger data.val_fraction for val)")
        self._epoch, self._perm = -1, np.arange(self.n_chunks)

    def _chunk(self, i: int) -> int:
        epoch, j = divmod(i, self.n_chunks)
        if not self.shuffle:
            return j
        if epoch != self._epoch:
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._epoch, self._perm = epoch, rng.permutation(self.n_chunks)
        return int(self._perm[j])

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences start .. start + size - 1: inputs and targets, each (size, seq_len) int64."""
        L = self.seq_len
        rows = [self.tokens[c * L: c * L + L + 1] for c in map(self._chunk, range(start, start + size))]
        data = torch.from_numpy(np.stack(rows).astype(np.int64))  # (size, L + 1)
        return data[:, :-1], data[:, 1:]
