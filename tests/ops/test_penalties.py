"""apply_penalties: every registered backend against a hand computation and the reference."""

import pytest
import torch

import infercore
from infercore.ops.sampling.reference_penalties import apply_penalties_reference
from tests.helpers import assert_close, backend_params

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _hand(logits, counts, prompt, rep, pres, freq):
    """Element by element, from the documented convention."""
    out = []
    for r, row in enumerate(logits.tolist()):
        new = []
        for i, x in enumerate(row):
            c = int(counts[r, i])
            if c > 0 or (prompt is not None and bool(prompt[r, i])):
                x = x / rep[r] if x > 0 else x * rep[r]
            x -= freq[r] * c + pres[r] * (c > 0)
            new.append(x)
        out.append(new)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("backend", backend_params("sample.penalties", include_reference=True))
@pytest.mark.parametrize("per_row", [False, True], ids=["numbers", "tensors"])
def test_penalties_match_hand_computation(backend, per_row, device):
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(3, 13, generator=gen) * 2).to(device)
    counts = torch.randint(0, 3, (3, 13), generator=gen, dtype=torch.int32).to(device)
    prompt = (torch.rand(3, 13, generator=gen) < 0.3).to(device)
    rep, pres, freq = [1.3, 0.8, 2.0], [0.5, -0.2, 0.0], [0.25, 0.1, -0.3]
    if per_row:
        args = {"repetition_penalty": torch.tensor(rep, device=device),
                "presence_penalty": torch.tensor(pres, device=device),
                "frequency_penalty": torch.tensor(freq, device=device)}
    else:
        rep, pres, freq = [rep[0]] * 3, [pres[0]] * 3, [freq[0]] * 3
        args = {"repetition_penalty": rep[0], "presence_penalty": pres[0],
                "frequency_penalty": freq[0]}
    expected = _hand(logits.cpu(), counts.cpu(), prompt.cpu(), rep, pres, freq)
    out = infercore.ops.apply_penalties(logits, counts, prompt_mask=prompt, backend=backend,
                                        **args)
    assert out is logits
    assert_close(logits.cpu(), expected, dtype=torch.float32)


@pytest.mark.parametrize("backend", backend_params("sample.penalties"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 7), (5, 301), (2, 4099)], ids=str)
@pytest.mark.parametrize("with_prompt", [False, True], ids=["output", "prompt"])
def test_penalties_match_reference(backend, dtype, shape, with_prompt, device):
    gen = torch.Generator().manual_seed(shape[1])
    logits = (torch.randn(shape, generator=gen) * 3).to(device, dtype)
    counts = torch.randint(0, 4, shape, generator=gen, dtype=torch.int64).to(device)
    counts[counts == 3] = 0
    prompt = (torch.rand(shape, generator=gen) < 0.2).to(device) if with_prompt else None
    rep = (torch.rand(shape[0], generator=gen) + 0.5).to(device)
    expected = logits.clone()
    apply_penalties_reference(expected, counts, prompt, rep, 0.3, 0.15)
    out = logits.clone()
    infercore.ops.apply_penalties(out, counts, repetition_penalty=rep, presence_penalty=0.3,
                                  frequency_penalty=0.15, prompt_mask=prompt, backend=backend)
    assert_close(out, expected.double(), dtype=dtype)


def test_neutral_penalties_leave_logits_untouched(device):
    logits = torch.randn(2, 9, device=device)
    before = logits.clone()
    counts = torch.ones(2, 9, dtype=torch.int32, device=device)
    assert infercore.ops.apply_penalties(logits, counts) is logits
    assert torch.equal(logits, before)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"repetition_penalty": 0.0}, ValueError, "repetition_penalty must be positive"),
        ({"repetition_penalty": torch.tensor([1.0, -2.0])}, ValueError, "repetition_penalty"),
        ({"presence_penalty": float("nan")}, ValueError, "presence_penalty must be finite"),
        ({"frequency_penalty": torch.ones(3)}, ValueError, r"frequency_penalty .*\[2\]"),
        ({"prompt_mask": torch.ones(2, 8, dtype=torch.bool)}, ValueError, "prompt_mask must"),
        ({"prompt_mask": torch.ones(2, 9)}, TypeError, "prompt_mask must have dtype bool"),
        ({"token_counts": torch.ones(2, 9)}, TypeError, "token_counts must have dtype"),
        ({"token_counts": torch.ones(3, 9, dtype=torch.int32)}, ValueError, "token_counts"),
    ],
)
def test_penalties_reject_bad_arguments(kwargs, exc, match):
    counts = kwargs.pop("token_counts", torch.zeros(2, 9, dtype=torch.int32))
    with pytest.raises(exc, match=match):
        infercore.ops.apply_penalties(torch.randn(2, 9), counts, **kwargs)


def test_penalties_custom_op_has_fake_implementation():
    logits = torch.randn(2, 50, device="meta")
    counts = torch.zeros(2, 50, dtype=torch.int32, device="meta")
    torch.ops.infercore.apply_penalties(logits, counts, None, None, 1.2, None, 0.0, None, 0.1,
                                        "auto")


@pytest.mark.cuda
def test_triton_penalties_bf16_on_cuda():
    logits = torch.randn(64, 128256, device="cuda", dtype=torch.bfloat16) * 4
    counts = torch.randint(0, 3, logits.shape, device="cuda", dtype=torch.int32)
    prompt = torch.rand(logits.shape, device="cuda") < 0.01
    rep = torch.rand(64, device="cuda") + 0.5
    expected = logits.clone()
    apply_penalties_reference(expected, counts, prompt, rep, 0.2, 0.1)
    infercore.ops.apply_penalties(logits, counts, repetition_penalty=rep, presence_penalty=0.2,
                                  frequency_penalty=0.1, prompt_mask=prompt, backend="triton")
    assert_close(logits, expected.double(), dtype=torch.bfloat16)
