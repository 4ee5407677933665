"""A transformers causal LM as a :class:`~infercore.spec.models.LogitsModel`, with its own
``past_key_values`` cache.

This adapter keeps one transformers ``DynamicCache`` for the current batch. Every row
owns some of the cache's slots (positions along its sequence dim); a 2D attention mask
marks which slots each row may attend to, and ``position_ids`` carry each token's real
position, so rows of different lengths share the slot axis:

- new tokens of all rows are appended as one right-padded chunk (pad slots masked);
- rolling a row back (drafts the target rejected) masks its slots past the kept prefix;
  slots that no row uses any more at the end of the cache are cropped away, so a
  single-row batch stays compact, while a batch keeps masked holes where rows accepted
  fewer drafts than others;
- a batch whose ``keys`` differ from the previous call's starts a new cache.

:class:`infercore.spec.paged.PagedModel` is the paged-KV alternative (block tables, slot
release through the cache components) for models with a paged forward; this adapter
serves transformers models as they are, as draft or target.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from infercore.spec.models import common_prefix, logits_arguments

__all__ = ["HFModel"]


class HFModel:
    """Adapter for a transformers ``*ForCausalLM`` (Llama family and alike).

    Parameters
    ----------
    model : transformers ``PreTrainedModel`` with a causal-LM head
        Called with ``input_ids``, ``attention_mask``, ``position_ids``,
        ``past_key_values``, ``use_cache=True`` and ``logits_to_keep``.
    pad_token_id : int
        Token fed in pad slots (masked; any valid id).

    Examples
    --------
    >>> target = HFModel(LlamaForCausalLM(cfg).cuda().eval())
    >>> logits = target.logits([prompt + drafts], num_last=len(drafts) + 1, keys=["req0"])
    """

    def __init__(self, model: Any, *, pad_token_id: int = 0) -> None:
        head = model.get_output_embeddings()
        self.model = model
        vocab = head.weight.shape[0] if head is not None else model.config.vocab_size
        self._vocab_size = int(vocab)
        self.device = next(model.parameters()).device
        self.pad_token_id = pad_token_id
        self.reset()

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def num_slots(self) -> int:
        """Slots along the cache's sequence dim (tokens of all rows, holes and pads)."""
        return self._valid.shape[1]

    def reset(self) -> None:
        """Drop the cache."""
        self._cache: Any = None
        self._keys: list[Hashable] | None = None
        self._tokens: list[list[int]] = []
        self._slots: list[list[int]] = []
        self._valid = torch.zeros((0, 0), dtype=torch.bool)

    @torch.inference_mode()
    def logits(
        self,
        rows: Sequence[Sequence[int]],
        num_last: int | Sequence[int] = 1,
        keys: Sequence[Hashable] | None = None,
    ) -> torch.Tensor:
        """See :class:`~infercore.spec.models.LogitsModel`; returns float32 ``[B, n, V]``."""
        rows, ns, keys = logits_arguments(rows, num_last, keys)
        if keys != self._keys:
            self.reset()
            self._keys = keys
            self._tokens = [[] for _ in rows]
            self._slots = [[] for _ in rows]
            self._valid = torch.zeros((len(rows), 0), dtype=torch.bool)
        self._rollback(rows, ns)
        return self._extend(rows, ns)

    def _rollback(self, rows: list[list[int]], ns: list[int]) -> None:
        """Keep each row's cached prefix shared with ``rows`` minus the tokens to score."""
        for b, row in enumerate(rows):
            keep = min(common_prefix(self._tokens[b], row), len(row) - ns[b])
            if keep < len(self._tokens[b]):
                self._valid[b, self._slots[b][keep:]] = False
                del self._tokens[b][keep:], self._slots[b][keep:]
        used = max((s[-1] + 1 for s in self._slots if s), default=0)
        drop = self.num_slots - used
        if drop > 0:
            self._valid = self._valid[:, :used].clone()
            if used == 0:
                self._cache = None
            else:
                self._cache.crop(-drop)  # negative: remove this many (all transformers versions)

    def _extend(self, rows: list[list[int]], ns: list[int]) -> torch.Tensor:
        new = [row[len(self._tokens[b]) :] for b, row in enumerate(rows)]
        width = max(len(x) for x in new)
        start = self.num_slots
        ids = [x + [self.pad_token_id] * (width - len(x)) for x in new]
        positions = [
            [len(self._tokens[b]) + min(j, len(x) - 1) for j in range(width)]
            for b, x in enumerate(new)
        ]
        fresh = torch.tensor([[j < len(x) for j in range(width)] for x in new])
        self._valid = torch.cat([self._valid, fresh], dim=1)

        # Chunk columns whose logits are read: the last ns[b] new tokens of each row.
        wanted = [[len(x) - n + i for i in range(n)] for x, n in zip(new, ns, strict=True)]
        cols = sorted({c for w in wanted for c in w})
        dev = self.device
        if len(cols) == width - cols[0]:  # a suffix of the chunk: keep the last len(cols)
            keep: int | torch.Tensor = len(cols)
        else:
            keep = torch.tensor(cols, dtype=torch.int64, device=dev)
        out = self.model(
            input_ids=torch.tensor(ids, dtype=torch.int64, device=dev),
            attention_mask=self._valid.to(dev, dtype=torch.int64),
            position_ids=torch.tensor(positions, dtype=torch.int64, device=dev),
            past_key_values=self._cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        self._cache = out.past_key_values
        for b, x in enumerate(new):
            self._tokens[b].extend(x)
            self._slots[b].extend(range(start, start + len(x)))
        n_max = max(ns)
        where = {c: i for i, c in enumerate(cols)}
        idx = [[where[w[min(i, len(w) - 1)]] for i in range(n_max)] for w in wanted]
        logits = out.logits
        index = torch.tensor(idx, dtype=torch.int64, device=logits.device)
        return logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1])).float()
