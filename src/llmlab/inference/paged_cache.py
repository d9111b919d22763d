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

Attention (`paged_attention`) gathers each row's blocks into a contiguous, left-padded K/V and runs
llmlab's own `attention` on it with a key padding mask. That copy is what a fused paged kernel
(vLLM's) avoids; here it keeps every attention backend usable as it is. `PagedBatch` is the
`Cache` of one model forward: it writes the new tokens' keys and values into their slots and hands
each layer the gathered K/V, so the model runs unchanged.

Left out: block sharing with copy-on-write (prefix caching, parallel sampling), swapping blocks to
host memory, and a fused paged-attention kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmlab.attention.functional import attention


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


def slot_index(block_tables: torch.Tensor, context_lens: torch.Tensor, length: int,
               block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each column of a left-padded (B, length) K/V lives in the pool.

    block_tables (B, n) block ids, padded with any valid id past a row's last block;
    context_lens (B,) tokens per row (<= length). Row b's tokens fill the last context_lens[b] columns.
    Returns blocks, offsets (B, length) (padding columns point at the row's first slot) and
    real (B, length), True at a real token.
    Example: block_size 4, table [2, 0], 6 tokens, length 8 -> blocks [2 2 | 2 2 2 2 0 0],
    offsets [0 0 | 0 1 2 3 0 1], real [F F | T T T T T T].
    """
    column = torch.arange(length, device=block_tables.device)
    i = column - (length - context_lens)[:, None]  # (B, length): each column's token index, < 0 on padding
    real = i >= 0
    i = i.clamp(min=0)
    return block_tables.gather(1, i // block_size), i % block_size, real


def gather_kv(pool: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The (B, n_kv_heads, length, head_dim) keys (or values) at the slots of `slot_index`, from one
    layer's pool (num_blocks, n_kv_heads, block_size, head_dim)."""
    return pool[blocks, :, offsets].transpose(1, 2)  # (B, length, Hkv, D) -> (B, Hkv, length, D)


def paged_attention(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_tables: torch.Tensor,
                    context_lens: torch.Tensor, *, window: int | None = None, scale: float | None = None,
                    backend: str = "sdpa") -> torch.Tensor:
    """Causal attention of q (B, Hq, T, D) over each row's cached keys and values.

    k_pool, v_pool (num_blocks, Hkv, block_size, D): one layer's pool; block_tables (B, n);
    context_lens (B,) with T <= max(context_lens). The queries are each row's last T positions,
    left-padded like the keys (row b's first T - context_lens[b] queries, if any, are padding).
    Returns (B, Hq, T, D), what `attention` gives on the same keys stored contiguously.
    """
    length = int(context_lens.max())
    blocks, offsets, real = slot_index(block_tables, context_lens, length, k_pool.shape[2])
    k, v = gather_kv(k_pool, blocks, offsets), gather_kv(v_pool, blocks, offsets)
    return attention(q, k, v, causal=True, window=window, key_padding_mask=real, scale=scale, backend=backend)


class PagedBatch:
    """The `Cache` of one model forward over B sequences of a `BlockPool`.

    Row b holds cached_lens[b] positions in its blocks and brings new_lens[b] more, left-padded to
    T = max(new_lens) in the input ids. Every block the row needs after this call must already be in
    its table. Pass `positions` and `key_padding_mask` to the forward with this cache.

        ids (B, T)          keys each layer attends to (B, Hkv, S, D), S = max(cached + new)
        [pad pad a5 a6]     [pad pad pad a0 a1 a2 a3 a4 a5 a6]   a0..a4 gathered from blocks,
        [pad pad pad b3]    [pad pad pad pad pad pad b0 b1 b2 b3]  a5, a6, b3 written this call
    """

    length = 0  # `Cache.length` only sets default positions; a paged forward always passes them

    def __init__(self, pool: BlockPool, block_tables: Sequence[Sequence[int]], cached_lens: Sequence[int],
                 new_lens: Sequence[int]) -> None:
        device = pool.k.device
        self.pool = pool
        width = max(len(t) for t in block_tables)
        tables = torch.tensor([list(t) + [t[0]] * (width - len(t)) for t in block_tables], device=device)  # (B, n)
        new = torch.tensor(list(new_lens), device=device)
        context = torch.tensor(list(cached_lens), device=device) + new
        T, S = int(new.max()), int(context.max())
        self.blocks, self.offsets, real = slot_index(tables, context, S, pool.block_size)  # (B, S)
        self.fresh = not any(cached_lens)  # every row a prefill from an empty table: keys are just k, v
        self.query_mask = torch.arange(T, device=device) >= (T - new)[:, None]  # (B, T) True at real new tokens
        self.positions = (context[:, None] - T + torch.arange(T, device=device)).clamp(min=0)  # (B, T)
        self.key_padding_mask = None if bool(real.all()) else real  # (B, S); None keeps sdpa's fast paths
        # the new tokens are the last T key columns; their slots are where this call writes
        self._write_blocks = self.blocks[:, S - T:][self.query_mask]  # (N,) N = sum(new_lens)
        self._write_offsets = self.offsets[:, S - T:][self.query_mask]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the real new tokens of k, v (B, Hkv, T, D) into their slots; return (B, Hkv, S, D)."""
        for pool, new in ((self.pool.k[layer], k), (self.pool.v[layer], v)):
            pool[self._write_blocks, :, self._write_offsets] = new.transpose(1, 2)[self.query_mask]  # (N, Hkv, D)
        if self.fresh:  # subtle: T == S and the padded keys are masked, so the input is the whole context
            return k, v
        return gather_kv(self.pool.k[layer], self.blocks, self.offsets), \
            gather_kv(self.pool.v[layer], self.blocks, self.offsets)

    def advance(self, n: int) -> None:
        """Nothing to do: the scheduler keeps each sequence's length."""
