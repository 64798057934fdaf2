"""Speculative decoding's drafts, taken from the sequence itself (prompt lookup / n-grams).

An agent that rewrites a file with a small change repeats long runs of its prompt. The
drafter finds the sequence's last n tokens earlier in its prompt + output and proposes the
tokens that followed them there; the scheduler verifies them in the same llama_decode as
every other slot's work (scheduler.py) and keeps the ones the model's own sampler agrees
with. No second model, and nothing here touches llama.cpp: the policy calls `propose` while
planning a step and `observe` once the step is verified, so it is unit-tested on plain lists.

Costs: one dict lookup per step (the index holds, for each n-gram, the position after its
latest occurrence, and grows by one entry per n per token), plus one C-speed pass over the
prompt the first time a sequence drafts (3-7 ms for 8k tokens here).

Draft length adapts per sequence: it doubles after a fully accepted draft and falls back to
what was accepted after a miss; a long match (a copy in progress) drafts k_long..k_copy_max at
once for a sequence decoding alone; after an edit the copy is looked for again just past the
point where the output left it (`_resync`); a sequence whose recent drafts mostly fail stops drafting
for a while (longer after each failed retry), since on a CPU every verified token costs
compute that a rejected one wastes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SPEC_MODES = ("off", "ngram")


def spec_mode(configured: str | None) -> str:
    """The speculation mode: the config's, else $APPLIANCE_SPEC, else n-gram drafting (on)."""
    mode = (configured or os.environ.get("APPLIANCE_SPEC") or "ngram").strip().lower()
    if mode not in SPEC_MODES:
        raise ValueError(f"speculation must be one of {', '.join(SPEC_MODES)}, not {mode!r}")
    return mode


@dataclass(frozen=True)
class DraftConfig:
    """Knobs of n-gram drafting; the defaults suit a small model on a CPU."""

    n_max: int = 4  # longest n-gram looked up (tried first: the most specific match)
    n_min: int = 3  # 2-grams match everywhere in prose and code, and mostly mislead
    short_match_k: int = 4  # drafts from an n_min match are capped: short n-grams mislead more
    k_init: int = 4  # draft length of a sequence's first draft
    k_max: int = 16
    # A match at least this long is a copy in progress (an agent rewriting a file it was given):
    # a sequence decoding alone then drafts up to k_long at once, as llama-server's ngram-mod
    # does from 24-token matches, instead of growing k step by step.
    long_match: int = 12
    k_long: int = 64
    # A long draft accepted whole doubles the next, up to k_copy_max: a verified token costs
    # 8.5 ms in a 65-token batch and 7.2 ms in a 128-token one (Qwen 0.5B, 2 threads here;
    # flat beyond), while a miss wastes the rest of the draft. A miss starts again at k_long.
    k_copy_max: int = 128
    # After the output leaves its copy (an edit), the copy usually resumes a few source tokens
    # on: the last one or two output tokens are looked for in the next resync_window source
    # tokens after the point of divergence before any global n-gram lookup.
    resync_window: int = 48
    # Verified tokens (decodes + drafts) one step may hold before drafts stop being added:
    # with many slots decoding, drafts would make every slot's step slower.
    step_tokens: int = 24
    # Drafting pauses for a sequence whose acceptance average falls under this: on a CPU a
    # verified token costs a good part of a decode step (2 tokens ~1.5x one, 5 ~2.4x, measured
    # on Qwen 0.5B), so drafts pay only when most are accepted...
    min_accept: float = 0.5
    # ...and, while other sequences decode in the same step, under this (their time counts too).
    min_accept_shared: float = 0.6
    ema_alpha: float = 0.3
    pause_steps: int = 16  # first pause; doubles after each failed retry, up to max_pause_steps
    max_pause_steps: int = 512
    # One row's logits computed in an n-token batch and in a 1-token decode differ by up to ~0.5
    # on this CPU (Qwen 0.5B: llamafile sgemm, repacked GEMM, flash-attn split-KV); a greedy
    # choice closer than this is left to a 1-token decode (scheduler._verify). 0: no guard.
    tie_margin: float = 0.5

    def step_budget(self, shared: bool) -> int:
        """Verified tokens (decodes + drafts) one step may hold: `step_tokens` beside other
        decoding sequences, a whole long copy draft plus its own token when decoding alone."""
        return self.step_tokens if shared else self.k_copy_max + 1


class NgramIndex:
    """Where each n-gram (n_min..n_max) last occurred in a growing token list, for O(1) lookups."""

    def __init__(self, n_min: int, n_max: int):
        self.ns = range(n_max, n_min - 1, -1)
        self.tokens: list[int] = []
        # n -> {n-gram: position of the token after its latest occurrence whose follower is known}
        self._last: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self.ns}

    def extend(self, new: list[int]) -> None:
        """Append tokens; index every n-gram whose following token is now known."""
        t = self.tokens
        start = len(t)
        t.extend(new)
        for n, index in self._last.items():
            # n-grams ending just before positions max(n, start) .. len(t) - 1; later ones
            # overwrite earlier ones, so the dict keeps the latest occurrence (built in C).
            lo = max(n, start)
            if lo >= len(t):
                continue
            grams = zip(*(t[lo - n + j : len(t) - n + j] for j in range(n)), strict=True)
            index.update(zip(grams, range(lo, len(t)), strict=True))

    def find(self, n: int) -> int | None:
        """Where the last n tokens occurred before (the position after that occurrence)."""
        if len(self.tokens) < n:
            return None
        return self._last[n].get(tuple(self.tokens[-n:]))


class Drafter:
    """One sequence's drafting state: its token history and index, and its adaptive length."""

    def __init__(self, prompt: list[int], cfg: DraftConfig):
        self.cfg = cfg
        self._prompt: list[int] | None = prompt  # indexed on the first proposal
        self.index = NgramIndex(cfg.n_min, cfg.n_max)
        self._synced = 0  # generated tokens already in the index
        self.k = cfg.k_init
        self.accept_ema = 1.0  # optimistic: a sequence's first drafts are tried
        self.paused = 0  # steps left without drafting
        self._pause_len = cfg.pause_steps
        self._retrying = False
        self._src: int | None = None  # the source position the last draft followed
        self._src_len = 0  # history length when _src was set
        self.k_copy = cfg.k_long  # draft length of a copy in progress
        # (source position, history length) where the output last left the copy it followed
        self._diverged: tuple[int, int] | None = None

    # -- history ----------------------------------------------------------------------------
    def sync(self, generated: list[int]) -> None:
        """Bring the history up to date with the sequence's output so far."""
        if self._prompt is not None:
            self.index.extend(self._prompt)
            self._prompt = None
        if len(generated) > self._synced:
            self.index.extend(generated[self._synced :])
            self._synced = len(generated)

    # -- drafting ---------------------------------------------------------------------------
    def wants(self, shared: bool) -> int:
        """How many tokens this sequence would like to draft this step (0: none); `shared`:
        other sequences decode in the same step. Counts a paused step."""
        if self.paused:
            self.paused -= 1
            if self.paused == 0:
                self._retrying = True
                self.k = self.cfg.k_init // 2 or 1
            return 0
        if shared and self.accept_ema < self.cfg.min_accept_shared:
            return 0
        return self.k if shared else max(self.k, self.k_copy)  # propose caps it by the match

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest (or the followed) earlier occurrence
        of the history's last n tokens; [] when there is none."""
        if limit <= 0:
            return []
        idx = self.index
        t = idx.tokens
        src = self._follow()
        cap = self.k
        if src is None:
            src = self._resync()
            if src is not None:  # a guess from one or two tokens: a short draft until it holds
                cap = min(cap, self.cfg.short_match_k)
        if src is None:
            for n in idx.ns:
                src = idx.find(n)
                if src is not None:
                    break
            if src is None:
                return []
            if n <= self.cfg.n_min:
                cap = min(cap, self.cfg.short_match_k)
        if _match_len(t, src, self.cfg.long_match) >= self.cfg.long_match:
            cap = self.k_copy
        self._src, self._src_len = src, len(t)
        return t[src : src + min(limit, cap)]

    def _follow(self) -> int | None:
        """The previous draft's source moved on by what was emitted since, if everything
        emitted since equals the source there: a copy keeps following its original, not the
        latest look-alike. Otherwise remembers where the output left it (for `_resync`)."""
        if self._src is None:
            return None
        t = self.index.tokens
        emitted = t[self._src_len :]
        src = self._src + len(emitted)
        if src < len(t) and t[self._src : src] == emitted:
            return src
        copied = t[self._src : src]  # shorter than `emitted` when the source ran out
        i = next((i for i, (a, b) in enumerate(zip(copied, emitted, strict=False)) if a != b), len(copied))
        self._diverged = (self._src + i, self._src_len + i)
        self._src = None
        return None

    def _resync(self) -> int | None:
        """Where the copy resumes after an edit: the output's last two tokens, else its last
        one, first found in the source just after the point of divergence (a renamed
        identifier is followed by what followed the old name). None once the output has gone
        resync_window tokens past the divergence."""
        if self._diverged is None:
            return None
        p, h = self._diverged
        t = self.index.tokens
        if len(t) - h > self.cfg.resync_window:
            self._diverged = None
            return None
        end = min(p + self.cfg.resync_window, h)  # the source lies before the divergence
        for n in (2, 1):
            tail = t[-n:]
            for j in range(max(p, n - 1), end - 1):
                if t[j - n + 1 : j + 1] == tail:
                    return j + 1
        return None

    def observe(self, drafted: int, accepted: int) -> None:
        """A verified draft: adapt the length, and pause drafting where it does not pay."""
        cfg = self.cfg
        rate = accepted / drafted
        self.accept_ema += cfg.ema_alpha * (rate - self.accept_ema)
        if accepted == drafted:
            self.k = min(cfg.k_max, max(self.k, drafted) * 2)
            if drafted >= cfg.k_long:
                self.k_copy = min(cfg.k_copy_max, max(self.k_copy, drafted) * 2)
        else:
            self.k = max(1, min(self.k, accepted + 1))
            self.k_copy = cfg.k_long
        if self._retrying:
            self._retrying = False
            if rate >= cfg.min_accept:
                self._pause_len = cfg.pause_steps
                self.accept_ema = max(self.accept_ema, cfg.min_accept_shared)
                return
        if self.accept_ema < cfg.min_accept:
            self.paused = self._pause_len
            self._pause_len = min(cfg.max_pause_steps, self._pause_len * 2)
            self.accept_ema = cfg.min_accept  # the retry starts at the threshold


def _match_len(t: list[int], src: int, most: int) -> int:
    """How many tokens before `src` equal the history's last ones (up to `most`)."""
    m = 0
    while m < most and src - 1 - m >= 0 and t[src - 1 - m] == t[-1 - m]:
        m += 1
    return m
