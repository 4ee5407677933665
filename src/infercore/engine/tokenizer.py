"""Tokenizers: the model directory's HF tokenizer, or a byte-level one for ``tiny-random``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["ByteTokenizer", "Tokenizer", "load_tokenizer"]


@runtime_checkable
class Tokenizer(Protocol):
    """What the engine needs of a tokenizer."""

    @property
    def eos_token_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens ``0..255``, then ``BOS = 256`` and ``EOS = 257``.

    ``encode`` prepends BOS; ``decode`` drops ids that are not bytes and replaces
    invalid UTF-8 with U+FFFD.
    """

    bos_token_id = 256
    eos_token_id = 257
    vocab_size = 258

    def encode(self, text: str) -> list[int]:
        return [self.bos_token_id, *text.encode("utf-8")]

    def decode(self, token_ids: list[int]) -> str:
        return bytes(t for t in token_ids if 0 <= t < 256).decode("utf-8", errors="replace")


class _HFTokenizer:
    """A ``transformers`` tokenizer seen through :class:`Tokenizer`."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer

    @property
    def eos_token_id(self) -> int | None:
        return self._tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text))

    def decode(self, token_ids: list[int]) -> str:
        return self._tok.decode(token_ids, skip_special_tokens=True)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def load_tokenizer(path: str | Path) -> Tokenizer | None:
    """The tokenizer saved in a model directory (``transformers.AutoTokenizer``), or
    ``None`` when the directory has none (prompts must then be token ids)."""
    path = Path(path)
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return _HFTokenizer(AutoTokenizer.from_pretrained(str(path)))
