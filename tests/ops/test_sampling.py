"""sample / sampling_probs: every registered backend against the reference distribution."""

import pytest
import torch

import infercore
from infercore.ops.sampling import sampling_probs
from infercore.ops.sampling.philox import gumbel_noise, philox4x32
from infercore.ops.sampling.reference import sample_reference
from tests.helpers import backend_params
from tests.ops.sampling_oracle import chi_square_pvalue, oracle_probs

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
VOCAB = 37

# Filters of the chi-square tests on one row of VOCAB logits (temperature 0.8); each
# leaves 5 to 8 tokens and, in the combinations, every filter removes some.
CONFIGS = {
    "plain": {},
    "top_k": {"top_k": 6},
    "top_p": {"top_p": 0.7},
    "min_p": {"min_p": 0.2},
    "top_k+top_p": {"top_k": 8, "top_p": 0.8},
    "all": {"top_k": 9, "top_p": 0.9, "min_p": 0.25},
}


def _interpreted(backend: str, device: torch.device) -> bool:
    return backend != "reference" and device.type == "cpu"


def _chi_square_row() -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(1, VOCAB, generator=g) * 1.5


def _mixed_params(batch: int, vocab: int, device: torch.device, gen: torch.Generator) -> dict:
    """Per-row parameters covering greedy rows, disabled filters and their combinations."""

    def pick(*values):
        idx = torch.randint(0, len(values), (batch,), generator=gen)
        return torch.tensor(values)[idx].to(device)

    return {
        "temperature": pick(0.0, 0.5, 0.9, 1.0, 1.7),
        "top_k": pick(0, 1, 3, 7, vocab, vocab + 5, -2),
        "top_p": pick(1.0, 0.95, 0.6, 0.3, 0.01),
        "min_p": pick(0.0, 0.0, 0.05, 0.3, 1.0),
    }


@pytest.mark.parametrize("config", list(CONFIGS))
def test_sampling_probs_matches_oracle(config):
    x = _chi_square_row()
    kw = CONFIGS[config]
    probs = sampling_probs(x, 0.8, **kw)[0]
    ref = torch.tensor(oracle_probs(x[0].tolist(), 0.8, **kw), dtype=torch.float64)
    assert torch.allclose(probs.double(), ref, atol=1e-6), (probs, ref)
    assert 1 < int((ref > 0).sum()) < VOCAB or config == "plain"


def test_sampling_probs_matches_oracle_per_row():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(40, 23, generator=gen) * 2
    x[3, :5] = x[3, 5]  # ties at the top
    x[4, 1] = float("nan")
    p = _mixed_params(40, 23, torch.device("cpu"), gen)
    probs = sampling_probs(x, **p)
    for r in range(40):
        row = [v if v == v else float("-inf") for v in x[r].tolist()]
        ref = oracle_probs(row, float(p["temperature"][r]), top_k=int(p["top_k"][r]),
                           top_p=float(p["top_p"][r]), min_p=float(p["min_p"][r]))
        assert torch.allclose(probs[r].double(), torch.tensor(ref, dtype=torch.float64),
                              atol=1e-6), r


@pytest.mark.parametrize("backend", backend_params("sample", include_reference=True))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_draws_follow_the_filtered_distribution(backend, config, device):
    if _interpreted(backend, device) and config != "all":
        pytest.skip("the interpreter draws slowly: only the combined filters on CPU")
    # the interpreter runs about 5 rows a second; the power of 120 draws over 5 tokens
    # is enough there because the seeded-equality tests pin it to the reference
    draws = 120 if _interpreted(backend, device) else 6000 if device.type == "cpu" else 20000
    torch.manual_seed(list(CONFIGS).index(config))
    x = _chi_square_row().to(device)
    kw = CONFIGS[config]
    out = infercore.ops.sample(x.expand(draws, VOCAB), temperature=0.8, backend=backend, **kw)
    probs = sampling_probs(x, 0.8, **kw)[0]
    ids = out.token_ids
    assert ids.dtype == torch.int64 and ids.shape == (draws,)
    assert bool((probs[ids] > 0).all()), "a draw left the allowed set"
    assert chi_square_pvalue(ids, probs) > 1e-4


@pytest.mark.parametrize("backend", backend_params("sample", include_reference=True))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_seeded_draws_match_reference_and_stay_allowed(backend, dtype, device):
    gen = torch.Generator().manual_seed(11)
    batch, vocab = 16, 53
    x = (torch.randn(batch, vocab, generator=gen) * 2).to(device, dtype)
    x[1, 7:12] = x[1].max()  # tied maxima
    p = _mixed_params(batch, vocab, device, gen)
    seeds = torch.randint(0, 2**62, (batch,), generator=gen).to(device)
    ids = infercore.ops.sample(x, seeds=seeds, backend=backend, **p).token_ids
    probs = sampling_probs(x, **p)
    assert bool((probs.gather(1, ids[:, None]) > 0).all()), "a draw left the allowed set"
    ref, _ = sample_reference(x, p["temperature"], p["top_k"], p["top_p"], p["min_p"], seeds)
    assert torch.equal(ids, ref)


def _hard_rows(batch: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """Logits that stress a threshold search: ties, masked tokens, clustered and
    exponentially spaced values, huge magnitudes."""
    x = torch.randn(batch, vocab, generator=gen) * 2
    x[0, ::3] = float("-inf")
    x[1, 10:] = -1e30
    x[2] = 1.0 + torch.arange(vocab) * 1e-6
    x[3] = -(2.0 ** -torch.arange(vocab).float())
    x[4] = torch.randint(0, 4, (vocab,), generator=gen).float()  # many ties
    x[5, 50:] = -3e38
    x[6] = x[6].round()
    x[7, 7] = 1e4
    return x


def test_triton_search_paths_match_reference(device):
    """A small gather buffer and small chunks force the pivot searches (top-k, top-p),
    the final pass and the chunk loops on a small vocabulary."""
    pytest.importorskip("triton")
    from infercore.ops.sampling.triton_sample import sample_triton

    gen = torch.Generator().manual_seed(21)
    batch, vocab = 12, 160
    x = _hard_rows(batch, vocab, gen).to(device)
    p = _mixed_params(batch, vocab, device, gen)
    p["temperature"] = torch.where(p["temperature"] == 0, 1.0, p["temperature"])
    p["top_k"][::2] = torch.tensor([0, 5, 12, 40, 150, 2], device=device)
    p["top_p"][:4] = torch.tensor([1.0, 0.5, 0.9, 1.0], device=device)
    seeds = torch.randint(0, 2**62, (batch,), generator=gen).to(device)
    args = (p["temperature"], p["top_k"], p["top_p"], p["min_p"], seeds)
    ids, lse = sample_triton(x, *args, gather_cap=8, block=64, search_block=64)
    ref, ref_lse = sample_reference(x, *args)
    assert torch.equal(ids, ref)
    assert torch.allclose(lse, ref_lse, rtol=1e-5)


@pytest.mark.parametrize("backend", backend_params("sample", include_reference=True))
def test_seeded_rows_reproduce_across_batch_compositions(backend, device):
    gen = torch.Generator().manual_seed(5)
    vocab = 41
    seeded = torch.randn(4, vocab, generator=gen).to(device)
    others = torch.randn(5, vocab, generator=gen).to(device)
    seeds = torch.tensor([3, 2**40 + 1, 99, 12345], device=device)
    temps = torch.tensor([1.0, 0.7, 1.3, 0.9], device=device)

    def run(rows, companions, order):
        x = torch.cat([seeded[rows], others[companions]])[order]
        s = torch.cat([seeds[rows], torch.full((len(companions),), -1, device=device)])[order]
        t = torch.cat([temps[rows], torch.ones(len(companions), device=device)])[order]
        ids = infercore.ops.sample(x, temperature=t, top_k=20, top_p=0.95, seeds=s,
                                   backend=backend).token_ids
        return ids[torch.argsort(order)][: len(rows)]

    a = run(torch.arange(4), torch.tensor([0, 1]), torch.tensor([0, 1, 2, 3, 4, 5]))
    b = run(torch.tensor([2, 0, 3, 1]), torch.tensor([4, 3, 2]),
            torch.tensor([6, 5, 0, 4, 1, 3, 2]))
    c = run(torch.tensor([1]), torch.tensor([], dtype=torch.long), torch.tensor([0]))
    assert torch.equal(a[[2, 0, 3, 1]], b)
    assert c[0] == a[1]


def test_unseeded_rows_follow_torch_generator(device):
    x = torch.randn(16, 29, device=device)
    kw = {"temperature": 1.0, "backend": "reference"}
    torch.manual_seed(3)
    a = infercore.ops.sample(x, **kw).token_ids
    torch.manual_seed(3)
    b = infercore.ops.sample(x, seeds=torch.full((16,), -1, device=device), **kw)
    c = infercore.ops.sample(x, **kw).token_ids
    assert torch.equal(a, b.token_ids)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("backend", backend_params("sample", include_reference=True))
def test_greedy_rows_equal_argmax_within_a_mixed_batch(backend, device):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(6, 45, generator=gen)
    x[0, [4, 30]] = 9.0  # tie: the first index wins
    x = x.to(device)
    temps = torch.tensor([0.0, 1.0, 0.0, 0.6, 0.0, 2.0], device=device)
    ids = infercore.ops.sample(x, temperature=temps, top_k=3, top_p=0.5, backend=backend,
                               seeds=torch.arange(6, device=device)).token_ids
    greedy = temps == 0
    assert torch.equal(ids[greedy], x.argmax(dim=-1)[greedy])
    assert ids[0] == 4
    allowed = sampling_probs(x, temps, top_k=3, top_p=0.5)
    assert bool((allowed.gather(1, ids[:, None]) > 0).all())
    assert torch.equal(infercore.ops.sample(x, temperature=0, backend=backend).token_ids,
                       x.argmax(dim=-1))


@pytest.mark.parametrize("backend", backend_params("sample", include_reference=True))
def test_non_finite_rows_give_ids_in_range(backend, device):
    vocab = 33
    x = torch.randn(8, vocab)
    x[0] = float("nan")
    x[1, ::2] = float("nan")
    x[2] = float("-inf")
    x[3] = float("-inf")
    x[3, 17] = 0.5
    x[4, 9] = float("inf")
    x[5, :] = -3e38
    x[5, 20] = 3e38
    x[6, ::3] = float("-inf")
    x[7, 2::2] = -1e30
    x = x.to(device)
    for kw in ({}, {"top_k": 4, "top_p": 0.8, "min_p": 0.1}):
        ids = infercore.ops.sample(x, temperature=1.0, backend=backend, **kw).token_ids
        assert bool(((ids >= 0) & (ids < vocab)).all()), ids
        assert ids[1] % 2 == 1  # NaN counts as -inf
        assert ids[3] == 17 and ids[4] == 9 and ids[5] == 20
        assert ids[6] % 3 != 0 and (ids[7] < 2 or ids[7] % 2 == 1)


@pytest.mark.parametrize("backend", backend_params("sample", include_reference=True))
def test_logprobs_match_log_softmax(backend, device):
    x = (torch.randn(5, 57) * 3).to(device)
    temps = torch.tensor([0.0, 0.5, 1.0, 1.5, 0.8], device=device)
    out = infercore.ops.sample(x, temperature=temps, top_k=10, return_logprobs=4,
                               backend=backend)
    t = torch.where(temps > 0, temps, 1.0)[:, None]
    ref = torch.log_softmax(x.double() / t, dim=-1)
    values, ids = ref.topk(4, dim=-1)
    assert out.logprobs.dtype == torch.float32 and out.logprobs.shape == (5, 4)
    assert torch.equal(out.logprob_ids, ids)
    assert torch.allclose(out.logprobs.double(), values, atol=1e-4)
    tok = ref.gather(1, out.token_ids[:, None])[:, 0]
    assert torch.allclose(out.token_logprobs.double(), tok, atol=1e-4)
    assert infercore.ops.sample(x, temperature=1.0, backend=backend).logprobs is None


def test_empty_batch(device):
    out = infercore.ops.sample(torch.randn(0, 11, device=device), temperature=1.0, top_k=3,
                               return_logprobs=2)
    assert out.token_ids.shape == (0,) and out.logprobs.shape == (0, 2)


def test_philox_matches_known_answers():
    # Random123's known-answer vectors for Philox4x32-10
    zero = philox4x32(torch.tensor([0]), torch.tensor([0]))
    assert [int(w) for w in zero] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    # the noise of a token depends only on the seed and the token index
    a = gumbel_noise(torch.tensor([5, 7]), 50)
    b = gumbel_noise(torch.tensor([7]), 13)
    assert torch.equal(a[1, :13], b[0]) and not torch.equal(a[0], a[1])
    g = gumbel_noise(torch.arange(200), 64).double()
    assert abs(g.mean().item() - 0.5772) < 0.02 and abs(g.var().item() - 1.6449) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"temperature": -0.5}, ValueError, "temperature must be finite and >= 0"),
        ({"temperature": float("inf")}, ValueError, "temperature"),
        ({"temperature": 1.0, "top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"temperature": 1.0, "top_p": 1.5}, ValueError, "top_p"),
        ({"temperature": 1.0, "min_p": -0.1}, ValueError, r"min_p must be in \[0, 1\]"),
        ({"temperature": 1.0, "min_p": 1.01}, ValueError, "min_p"),
        ({"temperature": torch.tensor([1.0, -1.0, 1.0])}, ValueError, r"temperature.*row 1"),
        ({"temperature": torch.ones(4)}, ValueError, r"temperature must be .*\[batch\] = \[3\]"),
        ({"temperature": 1.0, "top_p": torch.tensor([0.5, 0.0, 1.0])}, ValueError, "top_p"),
        ({"temperature": 1.0, "top_k": 2.5}, TypeError, "top_k must be an integer"),
        ({"temperature": 1.0, "top_k": torch.ones(3)}, TypeError, "top_k must have an integer"),
        ({"temperature": 1.0, "seeds": torch.ones(3)}, TypeError, "seeds must have dtype int64"),
        ({"temperature": 1.0, "seeds": torch.ones(2, dtype=torch.long)}, ValueError, "seeds"),
        ({"temperature": 1.0, "return_logprobs": 12}, ValueError, "return_logprobs"),
        ({"temperature": None}, TypeError, "temperature"),
    ],
)
def test_sample_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        infercore.ops.sample(torch.randn(3, 11), **kwargs)


def test_sample_rejects_bad_logits():
    with pytest.raises(ValueError, match="logits must have 2"):
        infercore.ops.sample(torch.randn(2, 3, 4), temperature=1.0)
    with pytest.raises(TypeError, match="logits must have dtype"):
        infercore.ops.sample(torch.randn(2, 4, dtype=torch.float64), temperature=1.0)
    with pytest.raises(ValueError, match="non-empty vocab"):
        infercore.ops.sample(torch.randn(2, 0), temperature=1.0)


def test_custom_op_has_fake_implementation():
    x = torch.randn(3, 100, device="meta", dtype=torch.bfloat16)
    seeds = torch.zeros(3, dtype=torch.int64, device="meta")
    ids, lse = torch.ops.infercore.sample(x, seeds, None, 1.0, None, 5, None, 0.9, None, 0.0,
                                          "auto")
    assert ids.shape == (3,) and ids.dtype == torch.int64 and ids.device.type == "meta"
    assert lse.shape == (3,) and lse.dtype == torch.float32


def test_sample_under_torch_compile_fullgraph(device):
    x = torch.randn(4, 31, device=device)
    seeds = torch.arange(4, device=device)

    @torch.compile(fullgraph=True, dynamic=False, backend="aot_eager")
    def f(x):
        return infercore.ops.sample(x, temperature=0.7, top_k=5, seeds=seeds,
                                    backend="reference").token_ids

    eager = infercore.ops.sample(x, temperature=0.7, top_k=5, seeds=seeds, backend="reference")
    assert torch.equal(f(x), eager.token_ids)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_large_vocab_matches_reference_without_sync(dtype):
    batch, vocab = 64, 128256
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(batch, vocab, generator=gen) * 2).to("cuda", dtype)
    x[5, 1000:] = float("-inf")
    x[6, ::2] = -1e30
    p = _mixed_params(batch, vocab, torch.device("cuda"), gen)
    p["top_k"] = torch.where(p["top_k"] == 3, 2000, p["top_k"])  # above the gather buffer
    seeds = torch.randint(0, 2**62, (batch,), generator=gen).cuda()
    infercore.ops.sample(x, seeds=seeds, backend="triton", **p)  # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ids = infercore.ops.sample(x, seeds=seeds, backend="triton", **p).token_ids
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref, _ = sample_reference(x, p["temperature"], p["top_k"], p["top_p"], p["min_p"], seeds)
    assert bool((sampling_probs(x, **p).gather(1, ids[:, None]) > 0).all())
    assert (ids == ref).float().mean().item() >= 0.98


@pytest.mark.cuda
def test_device_parameters_are_range_checked_only_on_request(monkeypatch):
    x = torch.randn(3, 50, device="cuda")
    bad = torch.tensor([1.0, -1.0, 0.5], device="cuda")
    ids = infercore.ops.sample(x, temperature=bad).token_ids  # unchecked: ids stay in range
    assert bool(((ids >= 0) & (ids < 50)).all())
    monkeypatch.setenv("INFERCORE_SAMPLING_CHECKS", "1")
    with pytest.raises(ValueError, match=r"temperature.*row 1"):
        infercore.ops.sample(x, temperature=bad)
