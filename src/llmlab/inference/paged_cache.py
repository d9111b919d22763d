"""A paged KV cache (Kwon et al. 2023, "Efficient Memory Management for LLM Serving with PagedAttention"):
keys and values live in fixed-size blocks of one pre-allocated pool, and each sequence owns a list of
block ids, its block table.

    pool (per layer, K and V alike): (num_blocks, n_kv_heads, block_size, head_dim)

    block_size 4                     pool:  blk0  blk1  blk2  blk3  blk4  blk5  blk6
    request A, 10 tokens: [2, 0, 5]         A4-7  free  A0-3  B0-3  free  A8-9  B4
    request B,  5 tokens: [3, 6]            (token i of a request sits in block table[i // 4], slot i % 4)

A sequence takes one more block when its last one is full, so at most block_size - 1 slots per
sequence are unused, instead of a max_seq_len reservation per row; finished sequences give their
blocks back to the free list at once and any request can take them.

Decode attention (`paged_attention`, vLLM's decode-time kernel as PyTorch ops) reads the blocks of
every row straight from the pool, one row's blocks after another with no padding to the longest row,
and takes each row's softmax over its own blocks (a segment max and sum with index ops). A prefill
of new sequences needs no pool reads: its keys are its own, so it runs llmlab's `attention` on them
and only writes them into their blocks. `PagedBatch` is the model's `Cache` for one forward of
either kind, so the model runs unchanged.

Left out: block sharing with copy-on-write (prefix caching, parallel sampling), swapping blocks to
host memory, a prefill that extends a cached sequence (chunked prefill), and a fused kernel (the
block gather here is one copy of the rows' real keys and values per layer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmlab.attention.functional import attention
from llmlab.errors import UserError


class BlockPool:
    """The pre-allocated K and V blocks of every layer and the free list that hands them out."""

    def __init__(self, n_layers: int, num_blocks: int, n_kv_heads: int, block_size: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        shape = (n_layers, num_blocks, n_kv_heads, block_size, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: pop() hands out low ids first

    @property
    def num_blocks(self) -> int:
        return self.k.shape[1]

    @property
    def block_size(self) -> int:
        return self.k.shape[3]

    @property
    def num_free(self) -> int:
        return len(self._free)

    def blocks_for(self, n_tokens: int) -> int:
        """Blocks that hold n_tokens positions: ceil(n_tokens / block_size)."""
        return -(-n_tokens // self.block_size)

    def allocate(self) -> int:
        if not self._free:
            raise RuntimeError("the block pool is empty: the scheduler must preempt before it allocates")
        return self._free.pop()

    def free(self, blocks: Sequence[int]) -> None:
        self._free.extend(reversed(blocks))


@dataclass(frozen=True)
class RaggedBlocks:
    """Every block that some row's query reads, rows one after another: N blocks in all."""

    blocks: torch.Tensor  # (N,) block ids in the pool
    rows: torch.Tensor  # (N,) the row each belongs to
    visible: torch.Tensor  # (N, block_size) True at slots the row's query attends to
    num_rows: int


def ragged_blocks(block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int, *,
                  window: int | None = None) -> RaggedBlocks:
    """The blocks a one-token query per row reads: row b's query is its token context_lens[b] - 1 and sees
    tokens [context_lens[b] - window, context_lens[b]) (all of them without a window).

    block_tables (B, n) padded with anything past a row's last block; context_lens (B,).
    Example: block_size 4, tables [[2, 0, 5], [3, 1, 1]], lens [10, 3], window None ->
    blocks [2, 0, 5, 3], rows [0, 0, 0, 1], visible of block 5: [T, T, F, F] (tokens 8, 9).
    """
    B, n = block_tables.shape
    device = block_tables.device
    first = (context_lens - window).clamp(min=0) // block_size if window else torch.zeros_like(context_lens)
    column = torch.arange(n, device=device)
    used = (column >= first[:, None]) & (column < -(-context_lens // block_size)[:, None])  # (B, n)
    rows = torch.arange(B, device=device)[:, None].expand(B, n)[used]  # (N,)
    token = column.expand(B, n)[used][:, None] * block_size + torch.arange(block_size, device=device)  # (N, bs)
    visible = token < context_lens[rows][:, None]
    if window:
        visible &= token >= (context_lens[rows] - window)[:, None]
    return RaggedBlocks(block_tables[used], rows, visible, B)


def attend_blocks(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, layout: RaggedBlocks, *,
                  scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v of q (B, Hq, D) over each row's visible slots in `layout`; (B, Hq, D).

    Each block's scores are computed on their own; the row's softmax then uses the row's max over its
    blocks (scatter_reduce) and sums over its blocks (index_add): a segment softmax, exact, not online.
    """
    B, Hq, D = q.shape
    Hkv = k_pool.shape[1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    rows = layout.rows
    k, v = k_pool[layout.blocks], v_pool[layout.blocks]  # (N, Hkv, bs, D): the rows' blocks, unpadded
    q = q.view(B, Hkv, Hq // Hkv, D)[rows]  # (N, Hkv, G, D): GQA's G query heads per kv head
    scores = (q @ k.transpose(-1, -2)) * scale  # (N, Hkv, G, bs)
    scores = scores.masked_fill(~layout.visible[:, None, None, :], float("-inf"))
    block_max = scores.amax(dim=-1)  # (N, Hkv, G)
    row_max = block_max.new_full((B, *block_max.shape[1:]), float("-inf"))
    row_max.scatter_reduce_(0, rows[:, None, None].expand_as(block_max), block_max, reduce="amax")  # (B, Hkv, G)
    p = (scores - row_max[rows][..., None]).exp()  # (N, Hkv, G, bs); 0 at hidden slots
    denom = p.new_zeros(row_max.shape).index_add_(0, rows, p.sum(dim=-1))  # (B, Hkv, G)
    out = p.new_zeros(B, *q.shape[1:]).index_add_(0, rows, p @ v)  # (B, Hkv, G, D)
    return (out / denom[..., None]).view(B, Hq, D)  # every row sees at least its own token: denom > 0


def paged_attention(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_tables: torch.Tensor,
                    context_lens: torch.Tensor, *, window: int | None = None,
                    scale: float | None = None) -> torch.Tensor:
    """One-token-per-row (decode) attention over a paged cache, as vLLM's paged_attention.

    q (B, Hq, D): row b's query is its position context_lens[b] - 1, whose key and value are already
    in the pool; k_pool, v_pool (num_blocks, Hkv, block_size, D): one layer's pool; block_tables (B, n).
    Returns (B, Hq, D): what causal `attention` gives for that query on the row's keys stored contiguously.
    """
    return attend_blocks(q, k_pool, v_pool, ragged_blocks(block_tables, context_lens, k_pool.shape[2],
                                                          window=window), scale=scale)


class PagedBatch:
    """The `Cache` of one model forward over B sequences of a `BlockPool`: either a prefill of new sequences
    (empty tables; row b brings new_lens[b] tokens, left-padded to T = max(new_lens) in the input ids) or a
    decode step (one token per row after cached_lens[b] ones). Every block a row needs after this call
    must already be in its table. Pass `positions` and `key_padding_mask` to the forward with it.

        prefill  ids [[pad a0 a1 a2], [b0 b1 b2 b3]]   attention on these keys; a0..a2, b0..b3 written
        decode   ids [[a3], [b4]]                       a3, b4 written; paged_attention over the blocks
    """

    length = 0  # `Cache.length` only sets default positions; a paged forward always passes them

    def __init__(self, pool: BlockPool, block_tables: Sequence[Sequence[int]], cached_lens: Sequence[int],
                 new_lens: Sequence[int]) -> None:
        self.decode = any(cached_lens)
        if self.decode and any(n != 1 for n in new_lens):
            raise ValueError("a paged forward is a prefill of new sequences or one new token per sequence")
        device = pool.k.device
        self.pool = pool
        width = max(len(t) for t in block_tables)
        self.tables = torch.tensor([list(t) + [t[0]] * (width - len(t)) for t in block_tables],
                                   device=device)  # (B, n)
        new = torch.tensor(list(new_lens), device=device)
        self.context_lens = torch.tensor(list(cached_lens), device=device) + new  # (B,)
        T = int(new.max())
        real = torch.arange(T, device=device) >= (T - new)[:, None]  # (B, T) True at real new tokens
        self.positions = (self.context_lens[:, None] - T + torch.arange(T, device=device)).clamp(min=0)  # (B, T)
        self.key_padding_mask = None if self.decode or bool(real.all()) else real  # a prefill's keys: its tokens
        # each real new token's slot: token i of row b lives in block tables[b, i // bs], slot i % bs
        row, col = real.nonzero(as_tuple=True)  # (N,) each
        token = self.positions[row, col]
        self._write = (row, col, self.tables[row, token // pool.block_size], token % pool.block_size)
        self._layout: RaggedBlocks | None = None  # the decode's blocks, built by the first layer

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int | None = None,
               scale: float | None = None, **kwargs) -> torch.Tensor:
        """Write the new tokens' k, v (B, Hkv, T, D) into their slots; attention of q (B, Hq, T, D)."""
        row, col, block, slot = self._write
        self.pool.k[layer][block, :, slot] = k[row, :, col]  # (N, Hkv, D)
        self.pool.v[layer][block, :, slot] = v[row, :, col]
        if not self.decode:
            return attention(q, k, v, window=window, scale=scale, **kwargs)
        if kwargs.get("return_weights"):
            raise UserError("attention weights need a contiguous KV cache, not a paged one")
        if self._layout is None:
            self._layout = ragged_blocks(self.tables, self.context_lens, self.pool.block_size, window=window)
        out = attend_blocks(q[:, :, 0], self.pool.k[layer], self.pool.v[layer], self._layout, scale=scale)
        return out[:, :, None]  # (B, Hq, 1, D)

    def advance(self, n: int) -> None:
        """Nothing to do: the scheduler keeps each sequence's length."""
