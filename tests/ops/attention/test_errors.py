"""Bad arguments raise TypeError/ValueError naming the argument; skip_checks skips them."""

import pytest
import torch

import infercore
from infercore.ops import attention
from tests.ops.attention.batches import cu_seqlens, paged_batch

F32 = torch.float32


def _varlen_args(**over):
    args = dict(q=torch.randn(7, 4, 64), k=torch.randn(9, 2, 64), v=torch.randn(9, 2, 64),
                cu_seqlens_q=cu_seqlens([3, 4], "cpu"), cu_seqlens_k=cu_seqlens([4, 5], "cpu"),
                max_seqlen_q=4, max_seqlen_k=5)
    args.update(over)
    return args


VARLEN_ERRORS = {
    "k dtype": (dict(k=torch.randn(9, 2, 64, dtype=torch.float16)), TypeError, "k must have dtype"),
    "k/v shapes": (dict(v=torch.randn(9, 2, 32)), ValueError, "k and v must have the same shape"),
    "heads": (dict(k=torch.randn(9, 3, 64), v=torch.randn(9, 3, 64)), ValueError,
              "not a multiple of the 3 KV heads"),
    "head_dim": (dict(q=torch.randn(7, 4, 100), k=torch.randn(9, 2, 100),
                      v=torch.randn(9, 2, 100)), ValueError, "q has head_dim 100; supported"),
    "q not a tensor": (dict(q=[1.0]), TypeError, "q must be a torch.Tensor"),
    "cu dtype": (dict(cu_seqlens_q=torch.tensor([0, 3, 7])), TypeError,
                 "cu_seqlens_q must have dtype int32"),
    "cu_k batch": (dict(cu_seqlens_k=cu_seqlens([9], "cpu")), ValueError,
                   r"cu_seqlens_k must have shape \[3\]"),
    "cu not monotone": (dict(cu_seqlens_q=torch.tensor([0, 5, 4], dtype=torch.int32)),
                        ValueError, "cu_seqlens_q must be non-decreasing"),
    "cu total": (dict(cu_seqlens_k=cu_seqlens([4, 4], "cpu")), ValueError,
                 r"cu_seqlens_k\[-1\] must equal the number of packed tokens \(9\)"),
    "cu start": (dict(cu_seqlens_q=torch.tensor([1, 3, 7], dtype=torch.int32)), ValueError,
                 "cu_seqlens_q must start at 0"),
    "max_seqlen": (dict(max_seqlen_q=3), ValueError, "max_seqlen_q=3 is below the longest"),
    "negative max": (dict(max_seqlen_k=-1), ValueError, "max_seqlen_k must be a non-negative"),
    "device": (dict(k=torch.randn(9, 2, 64, device="meta"), v=torch.randn(9, 2, 64, device="meta")),
               ValueError, "tensors must be on one device"),
}


@pytest.mark.parametrize("name", list(VARLEN_ERRORS))
def test_varlen_rejects(name):
    over, exc, match = VARLEN_ERRORS[name]
    args = _varlen_args(**over)
    with pytest.raises(exc, match=match):
        attention.varlen(*args.values())


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(scale=-1.0), "scale must be a positive"),
        (dict(sliding_window=0), "sliding_window must be an int >= 1"),
        (dict(softcap=float("inf")), "softcap must be a positive finite"),
        (dict(out=torch.empty(7, 4, 32)), r"out must have shape \[7, 4, 64\]"),
        (dict(out=torch.empty(7, 64, 4).transpose(1, 2)), "out must have unit stride"),
    ],
)
def test_varlen_rejects_options(kw, match):
    with pytest.raises(ValueError, match=match):
        attention.varlen(*_varlen_args().values(), **kw)


def test_skip_checks_skips_value_checks():
    good = _varlen_args()
    bad = {**good, "max_seqlen_q": 3}  # a wrong bound, harmless to the reference backend
    with pytest.raises(ValueError, match="max_seqlen_q=3"):
        attention.varlen(*bad.values(), backend="reference")
    out = attention.varlen(*bad.values(), skip_checks=True, backend="reference")
    assert torch.equal(out, attention.varlen(*good.values(), backend="reference"))


@pytest.fixture
def batch():
    return paged_batch([40, 9], [5, 1], num_heads=4, num_kv_heads=2, head_dim=64,
                       block_size=16, dtype=F32, device=torch.device("cpu"))


def _paged(batch, **over):
    args = dict(q=batch.q, k_cache=batch.k_cache, v_cache=batch.v_cache,
                block_tables=batch.block_tables, seq_lens=batch.seq_lens,
                cu_seqlens_q=batch.cu_seqlens_q, max_seqlen_q=batch.max_seqlen_q)
    args.update(over)
    return attention.paged(*args.values())


def test_paged_rejects(batch):
    bad_lens = batch.seq_lens.clone()
    bad_lens[0] = batch.block_tables.shape[1] * 16 + 1
    with pytest.raises(ValueError, match=r"seq_lens\[0\] = 65 exceeds the block table's capacity"):
        _paged(batch, seq_lens=bad_lens)
    short = batch.seq_lens.clone()
    short[0] = 4
    with pytest.raises(ValueError, match=r"seq_lens\[0\] = 4 is below that sequence's query"):
        _paged(batch, seq_lens=short)
    table = batch.block_tables.clone()
    table[1, 0] = -2
    with pytest.raises(ValueError, match=r"block_tables\[1, 0\] = -2 is not a block of k_cache"):
        _paged(batch, block_tables=table)
    with pytest.raises(TypeError, match="k_cache must have the dtype of q"):
        _paged(batch, k_cache=batch.k_cache.half(), v_cache=batch.v_cache.half())
    with pytest.raises(ValueError, match="k_cache and v_cache must have the same shape"):
        _paged(batch, v_cache=batch.v_cache[:, :8])
    with pytest.raises(ValueError, match="k_cache must have unit stride"):
        _paged(batch, k_cache=batch.k_cache.transpose(0, 3).contiguous().transpose(0, 3))
    with pytest.raises(ValueError, match=r"seq_lens must have shape \[2\]"):
        _paged(batch, seq_lens=batch.seq_lens[:1])
    with pytest.raises(ValueError, match="k_scale must be a float or a one-element float32"):
        attention.paged(batch.q, *batch.cache_args(), batch.cu_seqlens_q, 5,
                        k_scale=torch.ones(2))
    with pytest.raises(ValueError, match="q has 3 sequences but block_tables has 2 rows"):
        attention.decode(batch.q[:3], *batch.cache_args())


def test_kv_write_rejects(batch):
    k = torch.randn(3, 2, 64)
    slots = torch.tensor([0, 5, -1])
    kv = (batch.k_cache, batch.v_cache)
    with pytest.raises(TypeError, match="slot_mapping must have dtype int64"):
        infercore.ops.kv.write(k, k, *kv, slots.int())
    with pytest.raises(ValueError, match=r"slot_mapping\[1\] = 9999 is neither -1"):
        infercore.ops.kv.write(k, k, *kv, torch.tensor([0, 9999, -1]))
    with pytest.raises(ValueError, match="names a slot twice"):
        infercore.ops.kv.write(k, k, *kv, torch.tensor([7, 7, -1]))
    with pytest.raises(ValueError, match=r"must match k_cache's \[2, 64\]"):
        infercore.ops.kv.write(torch.randn(3, 1, 64), torch.randn(3, 1, 64), *kv, slots)
    with pytest.raises(ValueError, match="slot_mapping has 2 entries, k has 3 tokens"):
        infercore.ops.kv.write(k, k, *kv, slots[:2])
