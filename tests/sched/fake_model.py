"""A deterministic fake model that runs steps through a simulated paged KV cache.

The "KV" of token ``p`` of a sequence is a chain hash of tokens ``0..p``, so it depends
on the token and everything before it, as real KV does. Each step writes the KV of the
scheduled tokens through the slot mapping, reading the previous token's KV back through
the block table; it then reads back every cache entry of each scheduled request and
checks it against the request's own tokens. A wrong block table, slot mapping, prefix
share or copy-on-write shows up as a mismatch. The next token is a function of the KV
of the last token, hence of all previous tokens.
"""

from __future__ import annotations

from infercore.sched import Request, SchedulerOutput

ROOT = 0x9E3779B9


def kv_of(prev: int, token: int) -> int:
    return hash((prev, token))


def chain(tokens: list[int]) -> list[int]:
    """Expected KV of every position of ``tokens``."""
    out, prev = [], ROOT
    for t in tokens:
        prev = kv_of(prev, t)
        out.append(prev)
    return out


def next_token(kv: int, vocab: int) -> int:
    return (kv >> 7) % vocab


def reference_generation(request: Request, vocab: int, max_len: int) -> list[int]:
    """The tokens ``request`` ends with when run alone: prompt, then the fake model's
    tokens until a stop token or ``max_len`` tokens (its length limit)."""
    tokens = list(request.prompt_token_ids)
    prev = chain(tokens)[-1]
    while True:
        tok = next_token(prev, vocab)
        tokens.append(tok)
        if request.is_stop_token(tok) or len(tokens) >= max_len:
            return tokens
        prev = kv_of(prev, tok)


class FakeRunner:
    """Runs a :class:`SchedulerOutput` against a simulated KV cache of ``num_blocks``.

    With the StreamingLLM policy (``sink_blocks``), cache position ``c`` past the sink
    blocks holds token ``c + num_dropped_tokens``.
    """

    def __init__(self, num_blocks: int, block_size: int, vocab: int, sink_blocks: int = 0):
        self.block_size = block_size
        self.vocab = vocab
        self.sink_tokens = sink_blocks * block_size
        self.kv: list[int | None] = [None] * (num_blocks * block_size)

    def _read(self, table: list[int], cache_pos: int) -> int | None:
        bs = self.block_size
        return self.kv[table[cache_pos // bs] * bs + cache_pos % bs]

    def step(self, out: SchedulerOutput) -> list[int] | list[list[int]]:
        """Run a step: one token per request, or, in a step with draft tokens, each
        request's emitted tokens (its drafts verified greedily)."""
        bs = self.block_size
        for src, dst in out.block_copies:
            self.kv[dst * bs : (dst + 1) * bs] = self.kv[src * bs : (src + 1) * bs]
        written: set[int] = set()
        sampled = []
        for req, s in zip(out.requests, out.scheduled, strict=True):
            assert s.token_ids, "a scheduled request computes at least one token"
            table = s.block_table
            for tok, pos, slot in zip(s.token_ids, s.positions, s.slot_mapping, strict=True):
                assert slot not in written, f"slot {slot} written twice in one step"
                written.add(slot)
                assert slot // bs in table, f"{req.request_id} writes outside its blocks"
                assert slot == table[pos // bs] * bs + pos % bs
                prev = self._read(table, pos - 1) if pos > 0 else ROOT
                self.kv[slot] = kv_of(prev, tok)
            dropped, sink = req.blocks.num_dropped_tokens, self.sink_tokens
            # The step's tokens follow the request's earlier ones (drafts are not yet part
            # of the request).
            seen = req.token_ids[: s.positions[0] + dropped] + s.token_ids
            full = chain(seen[: s.seq_len + dropped])
            expected = full[: min(sink, s.seq_len)] + full[sink + dropped :]
            actual = [self._read(table, p) for p in range(s.seq_len)]
            assert actual == expected, f"{req.request_id}: the cache holds other tokens' KV"
            sampled.append([next_token(kv, self.vocab) for kv in actual[-len(s.token_ids):]])
        return [row[-1] for row in sampled] if not out.num_draft_tokens else [
            self._verify(row, s.token_ids[1:]) if i < out.num_decodes else row[-1:]
            for i, (row, s) in enumerate(zip(sampled, out.scheduled, strict=True))
        ]

    @staticmethod
    def _verify(targets: list[int], drafts: list[int]) -> list[int]:
        """Greedy verification: the drafts while they equal the model's tokens, then the
        model's token at the first mismatch (or after the last draft)."""
        n = 0
        while n < len(drafts) and drafts[n] == targets[n]:
            n += 1
        return [*drafts[:n], targets[n]]
