"""The draft-model proposer, the callable-model adapter and the transformers adapter."""

from __future__ import annotations

import pytest
import torch

import infercore
from infercore.spec import CallableModel, DraftModelProposer, Proposer, RequestView
from infercore.spec.draft import as_logits_model
from tests.helpers import assert_close
from tests.spec.toy import VOCAB, DraftFn, next_token, target_fn


def _draft_rule(prev: int, cur: int) -> int:
    nxt = int(next_token(torch.tensor(prev), torch.tensor(cur)))
    return (nxt + 1) % VOCAB if (prev + cur) % 4 == 0 else nxt


def test_greedy_drafts_follow_the_draft_model():
    proposer = DraftModelProposer(CallableModel(DraftFn(), VOCAB), target_vocab_size=VOCAB)
    rows = [[1, 5, 2], [7], [3, 3, 3, 3]]
    prop = proposer.propose([RequestView(i, r) for i, r in enumerate(rows)], [3, 1, 0])
    expected = []
    for r, k in zip(rows, [3, 1, 0], strict=True):
        seq = list(r)
        for _ in range(k):
            seq.append(_draft_rule(seq[-2] if len(seq) > 1 else 0, seq[-1]))
        expected.append(seq[len(r) :])
    assert prop.rows() == expected
    assert prop.probs is None and prop.tokens.shape == (3, 3)
    assert prop.tokens[1, 1:].tolist() == [-1, -1] and prop.num_tokens.tolist() == [3, 1, 0]


def test_sampled_drafts_come_with_their_distributions():
    model = CallableModel(target_fn, VOCAB)
    reqs = [RequestView(i, [i, 2 * i + 1]) for i in range(4)]
    a = DraftModelProposer(model, target_vocab_size=VOCAB, temperature=1.5, seed=7).propose(reqs, 3)
    b = DraftModelProposer(model, target_vocab_size=VOCAB, temperature=1.5, seed=7).propose(reqs, 3)
    assert a.probs is not None and a.probs.shape == (4, 3, VOCAB)
    assert_close(a.probs.sum(-1), torch.ones(4, 3))
    picked = a.probs.gather(2, a.tokens[..., None])
    assert bool((picked > 0).all())
    assert torch.equal(a.tokens, b.tokens)  # same seed, same drafts
    # temperature 1.5 over one-hot logits of height 4: not every draft is the argmax
    c = DraftModelProposer(model, target_vocab_size=VOCAB, temperature=1.5, seed=8)
    drafts = torch.cat([c.propose(reqs, 3).tokens for _ in range(10)])
    greedy = DraftModelProposer(model, target_vocab_size=VOCAB).propose(reqs, 3).tokens
    assert not torch.equal(drafts, greedy.repeat(10, 1))


def test_vocabulary_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"vocabulary size \(11\) differs from target_vocab_size"):
        DraftModelProposer(CallableModel(target_fn, VOCAB), target_vocab_size=12)
    with pytest.raises(ValueError, match="target_vocab_size"):
        infercore.create("spec.proposer", "draft_model",
                         {"model": target_fn, "vocab_size": VOCAB, "target_vocab_size": 13})
    with pytest.raises(ValueError, match="vocab_size is required"):
        infercore.create("spec.proposer", "draft_model",
                         {"model": target_fn, "target_vocab_size": VOCAB})
    with pytest.raises(TypeError, match="model must be"):
        as_logits_model(42)


def test_bad_k_and_bad_model_output_are_errors():
    proposer = infercore.create("spec.proposer", "draft_model",
                                {"model": target_fn, "vocab_size": VOCAB,
                                 "target_vocab_size": VOCAB})
    assert isinstance(proposer, Proposer)
    with pytest.raises(ValueError, match="k must be >= 1"):
        proposer.propose([RequestView(0, [1])], 0)
    bad = CallableModel(lambda ids, pos: torch.zeros(ids.shape[0], VOCAB), VOCAB)
    with pytest.raises(ValueError, match="the model returned logits of shape"):
        bad.logits([[1, 2]])


# -- transformers adapter ---------------------------------------------------------------------


def _tiny_llama(layers: int = 2, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def _full_logits(model, row: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([row])).logits[0].float()


def test_hf_model_cached_logits_match_full_forward_through_rollbacks():
    from infercore.spec.hf import HFModel

    model = _tiny_llama()
    runner = HFModel(model)
    assert runner.vocab_size == 97
    g = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(0, 97, (n,), generator=g).tolist()
    rows = [rand(9), rand(3), rand(14)]
    steps = [
        (rows, [1, 2, 1]),                                               # prefill
        ([r + rand(4) for r in rows], [5, 5, 5]),                        # verify 4 drafts
        ([rows[0] + rand(2), rows[1] + rand(6), rows[2] + rand(1)], [3, 1, 2]),  # rollback
        ([rows[0][:5], rows[1] + rand(3), rows[2] + rand(2)], [1, 4, 3]),       # deep rollback
    ]
    for rows_now, ns in steps:
        out = runner.logits(rows_now, ns, keys=["a", "b", "c"])
        assert out.shape == (3, max(ns), 97) and out.dtype == torch.float32
        for b, (row, n) in enumerate(zip(rows_now, ns, strict=True)):
            assert_close(out[b, :n], _full_logits(model, row)[len(row) - n :], dtype=torch.float32)
    assert runner.num_slots < 40  # trailing slots no row uses are cropped
    single = HFModel(model)
    single.logits([rows[2] + [5, 6, 7]], 1)
    single.logits([rows[2] + [5]], 1)
    assert single.num_slots == len(rows[2]) + 1  # one row: rollback leaves no holes


def test_hf_draft_proposer_vocabulary_check_and_drafts():
    model = _tiny_llama(layers=1)
    with pytest.raises(ValueError, match="target_vocab_size"):
        infercore.create("spec.proposer", "draft_model", {"model": model, "target_vocab_size": 96})
    proposer = infercore.create("spec.proposer", "draft_model",
                                {"model": model, "target_vocab_size": 97})
    prompt = [3, 14, 15, 92, 65]
    drafts = proposer.propose([RequestView(0, prompt)], 4).rows()[0]
    seq = list(prompt)
    for _ in range(4):
        seq.append(int(_full_logits(model, seq)[-1].argmax()))
    assert drafts == seq[len(prompt) :]
