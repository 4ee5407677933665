"""What the engine returns: finished requests and streamed tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RequestOutput", "StreamChunk"]


@dataclass
class RequestOutput:
    """One generated sequence.

    Attributes
    ----------
    request_id : str
    index : int
        Position of the prompt in the ``generate`` call.
    prompt : str or None
        The prompt text (``None`` for token-id prompts).
    prompt_token_ids : list of int
    token_ids : list of int
        Generated tokens (a stop token that ended the request is included).
    text : str
        ``token_ids`` decoded (empty without a tokenizer).
    finish_reason : str or None
        ``"stop"`` (a stop token or EOS), ``"length"`` (``max_tokens`` or the model's
        length), ``"abort"``, ``"length_exceeded"`` (the prompt does not fit: nothing was
        generated) or ``"error"`` (the request was invalid); ``None`` while running.
    error : str or None
        Why the request failed, for ``"length_exceeded"`` and ``"error"``.
    """

    request_id: str
    index: int
    prompt: str | None
    prompt_token_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class StreamChunk:
    """New tokens of one request after a step.

    Attributes
    ----------
    index : int
        Position of the output in the ``generate`` result (prompt order, ``n`` samples
        of a prompt consecutive).
    token_ids : list of int
        Tokens generated in this step.
    text : str
        Text they add (decoded incrementally; bytes of an unfinished UTF-8 character are
        held back until it completes).
    finish_reason : str or None
        Set on the request's last chunk.
    output : RequestOutput
        The request's output (complete once ``finish_reason`` is set).
    """

    index: int
    token_ids: list[int]
    text: str
    finish_reason: str | None
    output: RequestOutput = field(repr=False)
