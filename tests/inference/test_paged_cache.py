"""The paged KV cache: block accounting, the block layout by hand, `paged_attention` against llmlab's
attention on the same keys stored contiguously (each row alone), and a model forward through
`PagedBatch` (prefill, then decode) against a forward over the whole sequence without a cache."""

from __future__ import annotations

import pytest
import torch

from llmlab.attention.functional import attention
from llmlab.inference.paged_cache import BlockPool, PagedBatch, paged_attention, ragged_blocks
from model.conftest import tiny_model  # tests/ is on sys.path: this package sits in it


def test_block_pool_hands_out_and_takes_back_blocks() -> None:
    pool = BlockPool(2, 5, 2, 4, 8)
    assert pool.k.shape == (2, 5, 2, 4, 8) and pool.num_blocks == 5 and pool.block_size == 4
    assert [pool.blocks_for(n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    taken = [pool.allocate() for _ in range(5)]
    assert taken == [0, 1, 2, 3, 4] and pool.num_free == 0
    with pytest.raises(RuntimeError, match="empty"):
        pool.allocate()
    pool.free([3, 1])
    assert pool.num_free == 2 and {pool.allocate(), pool.allocate()} == {1, 3}


def test_ragged_blocks_by_hand() -> None:
    """block_size 4; row 0 has 10 tokens in blocks [2, 0, 5], row 1 has 3 in [3]: only the used blocks,
    no padding; the query (the last token) sees slots up to itself. A window of 3 on row 0 (tokens 7..9)
    drops blocks 2 (tokens 0..3) and keeps slot 3 of block 0 (token 7)."""
    tables, lens = torch.tensor([[2, 0, 5], [3, 1, 1]]), torch.tensor([10, 3])
    layout = ragged_blocks(tables, lens, 4)
    assert layout.blocks.tolist() == [2, 0, 5, 3] and layout.rows.tolist() == [0, 0, 0, 1]
    assert layout.visible.tolist() == [[True] * 4, [True] * 4, [True, True, False, False], [True, True, True, False]]
    windowed = ragged_blocks(tables, lens, 4, window=3)
    assert windowed.blocks.tolist() == [0, 5, 3] and windowed.rows.tolist() == [0, 0, 1]
    assert windowed.visible.tolist() == [[False, False, False, True], [True, True, False, False],
                                         [True, True, True, False]]


def _scattered_pool(contexts: list[list[torch.Tensor]], num_blocks: int, block_size: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Write each row's (Hkv, L, D) tensor into randomly chosen blocks of a zero pool; return pool, tables."""
    g = torch.Generator().manual_seed(seed)
    free = torch.randperm(num_blocks, generator=g).tolist()
    Hkv, D = contexts[0].shape[0], contexts[0].shape[2]
    pool = torch.randn(num_blocks, Hkv, block_size, D, generator=g)  # junk outside the rows' slots
    tables = []
    for ctx in contexts:
        L = ctx.shape[1]
        table = [free.pop() for _ in range(-(-L // block_size))]
        for i in range(L):
            pool[table[i // block_size], :, i % block_size] = ctx[:, i]
        tables.append(table)
    width = max(len(t) for t in tables)
    return pool, torch.tensor([t + [t[0]] * (width - len(t)) for t in tables])


@pytest.mark.parametrize("window", [None, 3, 6])
@pytest.mark.parametrize(("Hq", "Hkv"), [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
def test_paged_attention_equals_contiguous_attention(window: int | None, Hq: int, Hkv: int) -> None:
    """Rows of 9, 4, 13 and 1 tokens in shuffled blocks of 4 in a pool full of junk: each row's query (its
    last position) against `attention` (naive, the oracle) on that row's keys stored contiguously."""
    g = torch.Generator().manual_seed(0)
    lens, D = [9, 4, 13, 1], 8
    ks = [torch.randn(Hkv, L, D, generator=g) for L in lens]
    vs = [torch.randn(Hkv, L, D, generator=g) for L in lens]
    k_pool, tables = _scattered_pool(ks, 12, 4, seed=1)
    v_pool, tables_v = _scattered_pool(vs, 12, 4, seed=1)
    assert torch.equal(tables, tables_v)
    q = torch.randn(len(lens), Hq, D, generator=g)
    out = paged_attention(q, k_pool, v_pool, tables, torch.tensor(lens), window=window)
    assert out.shape == (len(lens), Hq, D)
    for b in range(len(lens)):
        want = attention(q[b, None, :, None], ks[b][None], vs[b][None], causal=True, window=window, backend="naive")
        torch.testing.assert_close(out[b], want[0, :, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fields", [{}, {"n_kv_heads": 1, "sliding_window": 5}], ids=["mha", "mqa_window5"])
def test_model_through_paged_batch_equals_no_cache(fields: dict) -> None:
    """Two prompts (11 and 6 tokens) prefilled together into blocks of 4, then three one-token decode steps;
    each step's last logits equal a plain forward of that row's whole sequence."""
    model = tiny_model(**fields)
    cfg = model.cfg
    pool = BlockPool(cfg.n_layers, 10, cfg.kv_heads, 4, cfg.head_dim)
    seqs = [[5, 17, 3, 40, 22, 9, 1, 8, 30, 2, 61], [8, 30, 2, 61, 7, 4]]
    tables: list[list[int]] = [[], []]
    cached = [0, 0]
    new = [list(s) for s in seqs]
    with torch.no_grad():
        for _ in range(4):
            for row in range(2):
                while pool.blocks_for(cached[row] + len(new[row])) > len(tables[row]):
                    tables[row].append(pool.allocate())
            batch = PagedBatch(pool, tables, cached, [len(n) for n in new])
            T = max(len(n) for n in new)
            ids = torch.tensor([[0] * (T - len(n)) + n for n in new])  # (2, T), left-padded
            logits = model(ids, positions=batch.positions, cache=batch,
                           key_padding_mask=batch.key_padding_mask).logits[:, -1]
            for row in range(2):
                want = model(torch.tensor([seqs[row]])).logits[0, -1]
                torch.testing.assert_close(logits[row], want, rtol=1e-4, atol=1e-5)
                cached[row] += len(new[row])
                token = int(want.argmax())
                seqs[row].append(token)
                new[row] = [token]
    assert pool.num_free == 10 - len(tables[0]) - len(tables[1])


def test_paged_batch_is_a_prefill_or_a_decode() -> None:
    """A forward that extends a cached sequence by several tokens (chunked prefill) is not supported."""
    pool = BlockPool(1, 4, 1, 4, 2)
    with pytest.raises(ValueError, match="prefill of new sequences or one new token"):
        PagedBatch(pool, [[0, 1]], [3], [2])
