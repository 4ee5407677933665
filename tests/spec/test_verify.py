"""rejection_sample and greedy_verify: exactness, reproducibility, backends, bad input."""

from __future__ import annotations

import pytest
import torch

from infercore.spec import greedy_verify, rejection_sample
from infercore.spec.verify.reference import rejection_sample_reference
from infercore.spec.verify.triton_rejection import rejection_sample_triton
from tests.helpers import backend_params

REJECTION_BACKENDS = backend_params("spec.rejection", include_reference=True)
OTHER_REJECTION_BACKENDS = backend_params("spec.rejection")


def _dirichlet(shape: tuple[int, ...], gen: torch.Generator, conc: float = 1.0) -> torch.Tensor:
    g = torch.empty(shape).exponential_(generator=gen) ** (1.0 / conc)
    return g / g.sum(-1, keepdim=True)


def _random_case(batch, k, vocab, *, seed, with_q=True, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    p = _dirichlet((batch, k + 1, vocab), gen, 0.5)
    q = _dirichlet((batch, k, vocab), gen, 0.5)
    x = torch.multinomial(q.reshape(-1, vocab), 1, generator=gen).view(batch, k)
    n = torch.randint(0, k + 1, (batch,), generator=gen, dtype=torch.int32)
    seeds = torch.randint(-(2**62), 2**62, (batch,), generator=gen)
    t = lambda v: v.to(device)
    return (t(p).to(dtype), t(q).to(dtype) if with_q else None, t(x), t(n), t(seeds))


def _chi2_pvalue(observed: torch.Tensor, expected_probs: torch.Tensor) -> float:
    """Pearson chi-square p-value of counts against probabilities (0 if an impossible
    category was observed). Several rows: one pooled test (statistics and dofs add)."""
    observed = observed.double().reshape(-1, observed.shape[-1])
    probs = expected_probs.double().reshape(-1, observed.shape[-1])
    probs = probs / probs.sum(-1, keepdim=True)
    expected = observed.sum(-1, keepdim=True) * probs
    if bool(((expected == 0) & (observed > 0)).any()):
        return 0.0
    used = expected > 0
    stat = ((observed - expected) ** 2 / expected.clamp_min(1e-300))[used].sum()
    dof = (used.sum(-1) - 1).clamp_min(0).sum()
    return float(torch.special.gammaincc(dof.double() / 2, stat / 2))


def _check_layout(tokens, num_accepted, draft_tokens, num_draft, vocab):
    """Accepted drafts, then one token in [0, V), then -1."""
    b, k = draft_tokens.shape
    assert tokens.shape == (b, k + 1) and tokens.dtype == torch.int64
    assert num_accepted.shape == (b,) and num_accepted.dtype == torch.int32
    pos = torch.arange(k + 1)
    acc = num_accepted.long()[:, None]
    assert bool((num_accepted >= 0).all()) and bool((num_accepted <= num_draft).all())
    drafts = torch.nn.functional.pad(draft_tokens, (0, 1), value=-1)
    assert torch.equal(tokens[pos < acc], drafts[pos < acc])
    last = tokens.gather(1, acc)[:, 0]
    assert bool(((last >= 0) & (last < vocab)).all())
    assert bool((tokens[pos > acc] == -1).all())


# -- exact agreement between backends -------------------------------------------------------


@pytest.mark.parametrize("backend", OTHER_REJECTION_BACKENDS)
@pytest.mark.parametrize("with_q", [True, False], ids=["q", "onehot"])
@pytest.mark.parametrize(("batch", "k", "vocab"), [(37, 3, 29), (9, 5, 3001), (6, 0, 13)])
def test_rejection_sample_matches_reference(backend, with_q, batch, k, vocab, device):
    p, q, x, n, seeds = _random_case(batch, k, vocab, seed=batch * vocab, with_q=with_q,
                                     device=device)
    out = rejection_sample(p, q, x, num_draft=n, seeds=seeds, backend=backend)
    ref = rejection_sample_reference(p, q, x, n, seeds)
    assert torch.equal(out[1], ref[1]) and torch.equal(out[0], ref[0])
    _check_layout(out[0].cpu(), out[1].cpu(), x.cpu(), n.cpu(), vocab)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_one_row_per_program_matches_reference(dtype, device):
    # The CUDA launch configuration (one row per program), also on the interpreter.
    p, q, x, n, seeds = _random_case(5, 3, 300, seed=3, dtype=dtype, device=device)
    p = p.transpose(0, 1).contiguous().transpose(0, 1)  # strided batch dim
    for draft_probs in (q, None):
        out = rejection_sample_triton(p, draft_probs, x, n, seeds, rows_per_program=1)
        ref = rejection_sample_reference(p, draft_probs, x, n, seeds)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


# -- the output distribution is the target's ------------------------------------------------


def _two_step_case(rows: int, vocab: int, one_hot: bool, seed: int):
    """Contexts of a 2-draft step: p1, p2[a], p3 (target), q1, q2[a] (draft); drafts sampled
    from q (or fixed functions of the context for one-hot q)."""
    gen = torch.Generator().manual_seed(seed)
    p1, q1 = _dirichlet((vocab,), gen), _dirichlet((vocab,), gen)
    p2, q2 = _dirichlet((vocab, vocab), gen), _dirichlet((vocab, vocab), gen)
    p3 = _dirichlet((vocab,), gen)
    if one_hot:
        d1 = torch.full((rows,), int(q1.argmax()))
        d2 = q2.argmax(-1)[d1]
    else:
        d1 = torch.multinomial(q1, rows, replacement=True, generator=gen)
        d2 = torch.multinomial(q2[d1], 1, generator=gen)[:, 0]
    target = torch.stack([p1.expand(rows, vocab), p2[d1], p3.expand(rows, vocab)], dim=1)
    draft = None if one_hot else torch.stack([q1.expand(rows, vocab), q2[d1]], dim=1)
    return (p1, p2, p3, q1, q2), target, draft, torch.stack([d1, d2], dim=1)


@pytest.mark.parametrize("backend", REJECTION_BACKENDS)
@pytest.mark.parametrize("one_hot", [False, True], ids=["q", "onehot"])
def test_emitted_tokens_follow_target_distribution(backend, one_hot, device):
    rows, vocab = 6000, 7
    (p1, p2, p3, q1, q2), target, draft, drafts = _two_step_case(rows, vocab, one_hot, seed=11)
    seeds = torch.arange(rows, dtype=torch.int64) * 7919 + 12345
    to = lambda t: None if t is None else t.to(device)
    tokens, acc = rejection_sample(
        to(target), to(draft), to(drafts), seeds=to(seeds), backend=backend
    )
    tokens, acc = tokens.cpu(), acc.cpu().long()
    first = tokens[:, 0]
    counts = lambda v: torch.bincount(v, minlength=vocab)
    assert _chi2_pvalue(counts(first), p1) > 1e-3

    # Second token given the first (rows whose first draft was accepted), pooled over it.
    kept = acc >= 1
    second = torch.stack([counts(tokens[kept & (first == a), 1]) for a in range(vocab)])
    assert second.sum() > rows // 10
    assert _chi2_pvalue(second, p2) > 1e-3
    # The bonus token after two accepted drafts.
    assert _chi2_pvalue(counts(tokens[acc == 2, 2]), p3) > 1e-3

    if not one_hot:  # and it is not the draft distribution
        assert _chi2_pvalue(counts(first), q1) < 1e-6
        assert _chi2_pvalue(second, q2) < 1e-6


# -- semantics --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", REJECTION_BACKENDS)
def test_seeded_rows_are_reproducible_and_independent_of_the_batch(backend, device):
    p, q, x, n, seeds = _random_case(20, 4, 50, seed=5, device=device)
    a = rejection_sample(p, q, x, num_draft=n, seeds=seeds, backend=backend)
    b = rejection_sample(p, q, x, num_draft=n, seeds=seeds, backend=backend)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # Row 7 alone, with the padding trimmed to its own draft count.
    r, m = 7, int(n[7])
    alone = rejection_sample(p[r : r + 1, : m + 1], q[r : r + 1, :m], x[r : r + 1, :m],
                             seeds=seeds[r : r + 1], backend=backend)
    assert torch.equal(alone[0][0], a[0][r, : m + 1]) and int(alone[1][0]) == int(a[1][r])
    other = rejection_sample(p, q, x, num_draft=n, seeds=seeds + 1, backend=backend)
    assert not torch.equal(other[0], a[0])


@pytest.mark.parametrize("backend", REJECTION_BACKENDS)
def test_draft_equal_to_target_is_always_accepted(backend, device):
    p, _, x, n, seeds = _random_case(16, 3, 40, seed=8, device=device)
    q = p[:, :3].clone()
    _, acc = rejection_sample(p, q, x, num_draft=n, seeds=seeds, backend=backend)
    assert torch.equal(acc.long(), n.long())


@pytest.mark.parametrize("backend", REJECTION_BACKENDS)
def test_zero_residual_falls_back_to_target(backend, device):
    # p = q / 2 everywhere: acceptance probability 1/2, residual max(0, p - q) = 0; the
    # token after a rejection is then drawn from p (only tokens with p > 0 can appear).
    gen = torch.Generator().manual_seed(2)
    q = _dirichlet((400, 1, 9), gen)
    q[:, :, :3] = 0.0
    q = q / q.sum(-1, keepdim=True)
    p = torch.cat([q / 2, q / 2], dim=1)
    x = torch.full((400, 1), 5)
    seeds = torch.arange(400, dtype=torch.int64)
    tokens, acc = rejection_sample(p.to(device), q.to(device), x.to(device),
                                   seeds=seeds.to(device), backend=backend)
    tokens, acc = tokens.cpu(), acc.cpu()
    assert 120 < int((acc == 0).sum()) < 280
    resampled = tokens[acc == 0, 0]
    assert bool((resampled >= 3).all())


@pytest.mark.parametrize("backend", REJECTION_BACKENDS)
def test_impossible_or_out_of_vocab_drafts_are_rejected(backend, device):
    p, q, _, _, seeds = _random_case(6, 3, 20, seed=4, device=device)
    p[:, 0, 2] = 0.0
    x = torch.tensor([[2, 1, 1], [25, 1, 1], [-3, 1, 1]] * 2, device=device)
    tokens, acc = rejection_sample(p, q, x, seeds=seeds, backend=backend)
    assert bool((acc == 0).all())
    assert bool((tokens[:, 1:] == -1).all()) and bool((tokens[:, 0] >= 0).all())
    assert bool((tokens[:2, 0] != 2).all()) or bool((tokens[::3, 0] != 2).all())


def test_default_seeds_follow_torch_manual_seed(device):
    p, q, x, n, _ = _random_case(30, 2, 17, seed=9, device=device)
    torch.manual_seed(123)
    a = rejection_sample(p, q, x, num_draft=n)
    torch.manual_seed(123)
    b = rejection_sample(p, q, x, num_draft=n)
    assert torch.equal(a[0], b[0])


def test_greedy_verify_accepts_the_matching_prefix(device):
    target = torch.tensor([[4, 5, 6, 7], [4, 5, 6, 7], [4, 5, 6, 7], [1, 2, 3, 9]])
    drafts = torch.tensor([[4, 5, 6], [4, 9, 6], [8, 5, 6], [1, 2, 3]])
    n = torch.tensor([3, 3, 3, 2])
    tokens, acc = greedy_verify(target.to(device), drafts.to(device), num_draft=n.to(device))
    assert acc.tolist() == [3, 1, 0, 2]
    assert tokens.tolist() == [
        [4, 5, 6, 7], [4, 5, -1, -1], [4, -1, -1, -1], [1, 2, 3, -1],
    ]


def test_greedy_verify_matches_a_loop_on_random_input(device):
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (200, 6), generator=gen)
    drafts = torch.randint(0, 3, (200, 5), generator=gen)
    n = torch.randint(0, 6, (200,), generator=gen)
    tokens, acc = greedy_verify(target.to(device), drafts.to(device), num_draft=n.to(device))
    for b in range(200):
        a = 0
        while a < n[b] and drafts[b, a] == target[b, a]:
            a += 1
        expected = target[b, : a + 1].tolist() + [-1] * (5 - a)
        assert int(acc[b]) == a and tokens[b].tolist() == expected


# -- bad input ----------------------------------------------------------------------------------


def _args(**over):
    p = torch.rand(2, 4, 10)
    args = {"target_probs": p, "draft_probs": torch.rand(2, 3, 10),
            "draft_tokens": torch.zeros(2, 3, dtype=torch.int64)}
    kwargs = {"num_draft": None, "seeds": None}
    for key, value in over.items():
        (args if key in args else kwargs)[key] = value
    return args, kwargs


@pytest.mark.parametrize(
    ("over", "exc", "match"),
    [
        ({"target_probs": torch.rand(2, 3, 10)}, ValueError, "target_probs must have shape"),
        ({"target_probs": torch.rand(2, 4)}, ValueError, "target_probs must have 3"),
        ({"target_probs": torch.rand(2, 4, 10).double()}, TypeError, "target_probs must have dty"),
        ({"draft_probs": torch.rand(2, 3, 11)}, ValueError, "share one vocabulary"),
        ({"draft_probs": torch.rand(2, 2, 10)}, ValueError, "draft_probs must have shape"),
        ({"draft_tokens": torch.zeros(2, 3)}, TypeError, "draft_tokens must have dtype"),
        ({"draft_tokens": torch.zeros(3, 3, dtype=torch.int64)}, ValueError, "draft_tokens must"),
        ({"num_draft": torch.zeros(3, dtype=torch.int32)}, ValueError, "num_draft must have"),
        ({"seeds": torch.zeros(2, dtype=torch.int32)}, TypeError, "seeds must have dtype"),
        ({"seeds": [1, 2]}, TypeError, "seeds must be a torch.Tensor"),
    ],
)
def test_rejection_sample_rejects_bad_arguments(over, exc, match):
    args, kwargs = _args(**over)
    with pytest.raises(exc, match=match):
        rejection_sample(**args, **kwargs)


def test_greedy_verify_rejects_bad_arguments():
    with pytest.raises(ValueError, match="target_ids must have shape"):
        greedy_verify(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="target_ids must have dtype"):
        greedy_verify(torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.int64))


def test_custom_ops_have_fake_implementations():
    p = torch.empty(3, 5, 100, device="meta")
    x = torch.empty(3, 4, dtype=torch.int64, device="meta")
    n = torch.empty(3, dtype=torch.int32, device="meta")
    s = torch.empty(3, dtype=torch.int64, device="meta")
    tokens, acc = torch.ops.infercore.rejection_sample(p, None, x, n, s, "auto")
    assert tokens.shape == (3, 5) and tokens.dtype == torch.int64 and acc.dtype == torch.int32
    tokens, acc = torch.ops.infercore.greedy_verify(
        torch.empty(3, 5, dtype=torch.int64, device="meta"), x, n, "auto"
    )
    assert tokens.shape == (3, 5) and acc.shape == (3,)


def test_rejection_sample_under_torch_compile_fullgraph(device):
    p, q, x, n, seeds = _random_case(8, 2, 33, seed=1, device=device)

    # aot_eager traces through the fake implementations without inductor's codegen time.
    @torch.compile(fullgraph=True, dynamic=False, backend="aot_eager")
    def f(p, q, x, n, seeds):
        tokens, acc = rejection_sample(p, q, x, num_draft=n, seeds=seeds, backend="reference")
        return tokens + 0, acc

    out = f(p, q, x, n, seeds)
    ref = rejection_sample_reference(p, q, x, n, seeds)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


# -- GPU ------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_matches_reference_on_cuda_large_vocab(dtype):
    p, q, x, n, seeds = _random_case(64, 4, 32000, seed=6, dtype=dtype, device="cuda")
    for draft_probs in (q, None):
        out = rejection_sample(p, draft_probs, x, num_draft=n, seeds=seeds, backend="triton")
        ref = rejection_sample_reference(p, draft_probs, x, n, seeds)
        # Same uniforms and products; float64 sums make the inverse-CDF picks agree too.
        assert torch.equal(out[1], ref[1]) and torch.equal(out[0], ref[0])


@pytest.mark.cuda
def test_triton_distribution_on_cuda():
    rows, vocab = 200_000, 7
    (p1, _, _, q1, _), target, draft, drafts = _two_step_case(rows, vocab, False, seed=3)
    seeds = torch.arange(rows, dtype=torch.int64)
    tokens, _ = rejection_sample(target.cuda(), draft.cuda(), drafts.cuda(),
                                   seeds=seeds.cuda(), backend="triton")
    first = tokens[:, 0].cpu()
    assert _chi2_pvalue(torch.bincount(first, minlength=vocab), p1) > 1e-3
    assert _chi2_pvalue(torch.bincount(first, minlength=vocab), q1) < 1e-6
