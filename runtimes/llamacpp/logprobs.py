"""Log-probabilities of generated tokens, in the shape OpenAI's `logprobs` reports.

They are a log-softmax over the model's raw logits row: before logit bias, repetition
penalties, temperature, top-k/top-p/min-p and grammar. That is the model's own
distribution, which is what evaluation tools compare and what OpenAI documents
(`logprob` of a token "given the context"); the sampled token may therefore be one the
raw distribution ranks below another, when sampling settings changed the odds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtimes.base import TokenLogprob, TopLogprob

MAX_TOP_LOGPROBS = 20  # OpenAI's limit, checked by the API as well


@dataclass
class RawLogprobs:
    """One position's numbers in token ids, computed on the scheduler thread."""

    token: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), most likely first


def raw_logprobs(row: np.ndarray, token: int, k: int) -> RawLogprobs:
    """Log-softmax of `row` at `token`, and the `k` most likely tokens (numpy, no vocab loop)."""
    peak = float(row.max())
    lse = peak + float(np.log(np.exp(row - peak, dtype=np.float32).sum(dtype=np.float64)))
    top: list[tuple[int, float]] = []
    k = min(max(k, 0), MAX_TOP_LOGPROBS, row.shape[0])
    if k:
        idx = np.argpartition(row, -k)[-k:]
        idx = idx[np.argsort(-row[idx], kind="stable")]
        top = [(int(i), float(row[i]) - lse) for i in idx]
    return RawLogprobs(token, float(row[token]) - lse, top)


def to_token_logprob(raw: RawLogprobs, piece: Callable[[int], bytes]) -> TokenLogprob:
    """Ids -> OpenAI's entry: token text (invalid UTF-8 of a partial character replaced) and bytes."""

    def candidate(tok: int, lp: float) -> TopLogprob:
        data = piece(tok)
        return TopLogprob(data.decode("utf-8", "replace"), lp, list(data))

    head = candidate(raw.token, raw.logprob)
    tops = [candidate(t, lp) for t, lp in raw.top]
    return TokenLogprob(head.token, head.logprob, head.bytes, tops)
