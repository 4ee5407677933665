"""Request: validation and the state machine."""

from __future__ import annotations

import pytest

from infercore.sched import FinishReason, IllegalTransitionError, Request, RequestStatus

S = RequestStatus
LEGAL = {
    S.WAITING: {S.RUNNING, S.ABORTED},
    S.RUNNING: {S.PREEMPTED, S.FINISHED, S.ABORTED},
    S.PREEMPTED: {S.RUNNING, S.ABORTED},
    S.FINISHED: set(),
    S.ABORTED: set(),
}
PATH_TO = {  # a legal way to reach each state from WAITING
    S.WAITING: [],
    S.RUNNING: [S.RUNNING],
    S.PREEMPTED: [S.RUNNING, S.PREEMPTED],
    S.FINISHED: [S.RUNNING, S.FINISHED],
    S.ABORTED: [S.ABORTED],
}


def request_in(state: RequestStatus) -> Request:
    req = Request("r", [1, 2])
    for s in PATH_TO[state]:
        req.transition(s, FinishReason.LENGTH if s is S.FINISHED else None)
    assert req.status is state
    return req


@pytest.mark.parametrize("src", list(S), ids=lambda s: s.value)
@pytest.mark.parametrize("dst", list(S), ids=lambda s: s.value)
def test_transitions(src, dst):
    req = request_in(src)
    reason = FinishReason.STOP if dst is S.FINISHED else None
    if dst in LEGAL[src]:
        req.transition(dst, reason)
        assert req.status is dst
    else:
        with pytest.raises(IllegalTransitionError, match=f"{src.value} -> {dst.value}"):
            req.transition(dst, reason)
        assert req.status is src


def test_finish_reasons():
    aborted = request_in(S.RUNNING)
    aborted.transition(S.ABORTED)
    assert aborted.finish_reason is FinishReason.ABORT and aborted.is_finished
    with pytest.raises(ValueError, match="FinishReason"):
        request_in(S.RUNNING).transition(S.FINISHED)


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="prompt_token_ids is empty"):
        Request("a", [])
    with pytest.raises(ValueError, match="max_tokens must be >= 1, got 0"):
        Request("a", [1], max_tokens=0)
    with pytest.raises(TypeError, match="request_id"):
        Request(7, [1])


def test_stop_tokens_and_eos():
    req = Request("a", [1], stop_token_ids=[5], eos_token_id=2)
    assert req.is_stop_token(5) and req.is_stop_token(2) and not req.is_stop_token(1)
    assert not Request("b", [1], eos_token_id=2, ignore_eos=True).is_stop_token(2)


def test_token_views():
    req = Request("a", [1, 2, 3])
    req.token_ids.append(9)
    assert req.prompt_token_ids == [1, 2, 3] and req.output_token_ids == [9]
    assert req.num_tokens == 4 and req.num_prompt_tokens == 3
