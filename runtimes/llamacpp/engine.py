"""The public face of our llama.cpp serving engine: load once, generate many at a time.

`Engine` loads a model and one multi-sequence context, starts the scheduler thread,
and exposes token-level generation as an async iterator of `Step`s. Chat templates,
tool calls and the OpenAI event shapes are built on top of this (runtime.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from runtimes.base import RuntimeStats, Sampling
from runtimes.llamacpp.drafting import DraftConfig, spec_mode
from runtimes.llamacpp.model import Context, ContextParams, Model
from runtimes.llamacpp.policy import Arrival
from runtimes.llamacpp.prefix_store import PrefixStore
from runtimes.llamacpp.requests import Step
from runtimes.llamacpp.scheduler import Scheduler

log = logging.getLogger("appliance.llamacpp")

__all__ = ["Engine", "EngineConfig", "EngineStats", "Step"]


@dataclass
class EngineConfig:
    model_path: Path
    n_ctx: int
    n_slots: int = 1
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_batch: int = 2048
    n_ubatch: int = 512
    flash_attn: bool = True
    kv_type: str = "f16"
    n_gpu_layers: int = -1
    # Routed experts of the first N layers stay in host memory (llama.cpp's --n-cpu-moe N; -1: all):
    # the planner's split of a MoE model between VRAM and RAM. 0 for dense models.
    n_cpu_moe: int = 0
    max_queue: int = 64
    queue_timeout_s: float | None = None  # a request still waiting for a slot after this gets QueueTimeout
    prefix_store_dir: Path | None = None
    prefix_store_ram_bytes: int = 1 << 30
    # Optional extras (defaults keep the behaviour above).
    use_mmap: bool = True
    swa_full: bool = False  # full-size sliding-window cache: more memory, full prefix reuse
    prefix_store_min_tokens: int = 256  # shorter prompts are cheap to recompute
    prefix_store_disk_bytes: int = 8 << 30
    park_min_prefill: int = 512  # see CacheManager._park_idle
    cpu_extra_buffers: bool | None = None  # ggml weight repacking; None: auto (see model.py)
    # Speculative decoding: "off" or "ngram" (drafts from the sequence's own prompt and output,
    # drafting.py); None: $APPLIANCE_SPEC, else "ngram".
    spec: str | None = None
    draft: DraftConfig = field(default_factory=DraftConfig)  # its knobs, when on


@dataclass
class EngineStats(RuntimeStats):
    prompt_tokens_cached: int = 0  # prompt tokens served from the KV cache (counter)
    prompt_tokens_processed: int = 0  # prompt tokens computed (counter)
    tokens_generated: int = 0  # counter
    requests_total: int = 0
    requests_cancelled: int = 0
    kv_cells_used: int = 0
    kv_cells_total: int = 0
    prefix_store_hits: int = 0
    prefix_store_tokens_restored: int = 0
    prefix_store_entries: int = 0


class Engine:
    """One model, `n_slots` concurrent sequences, continuous batching."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.model = Model(
            Path(cfg.model_path),
            n_gpu_layers=cfg.n_gpu_layers,
            n_cpu_moe=cfg.n_cpu_moe,
            use_mmap=cfg.use_mmap,
            use_extra_bufts=cfg.cpu_extra_buffers,
        )
        drafting = self._drafting(cfg)
        try:
            self.ctx = Context(
                self.model,
                ContextParams(
                    n_ctx=cfg.n_ctx,
                    # Drafting decides near ties on one more sequence (Scheduler._confirm).
                    n_seq=cfg.n_slots + (drafting is not None),
                    n_batch=cfg.n_batch,
                    n_ubatch=cfg.n_ubatch,
                    n_threads=cfg.n_threads,
                    n_threads_batch=cfg.n_threads_batch,
                    flash_attn=cfg.flash_attn,
                    kv_type=cfg.kv_type,
                    swa_full=cfg.swa_full,
                ),
            )
        except BaseException:
            self.model.close()
            raise
        # The most logit rows one step can ask for: the drafting step's budget plus the other
        # slots' last prompt rows. llama.cpp grows its logits buffer to the largest step so far
        # (~78 MB for 129 rows of a 152k vocabulary), which under load showed as RSS climbing
        # minutes after start; the warm-up takes it up front instead.
        rows = 1
        if drafting:
            rows = max(drafting.step_budget(False), drafting.step_budget(True)) + cfg.n_slots - 1
        outputs = min(rows, cfg.n_batch, self.ctx.n_ctx)
        try:
            self.ctx.warmup(outputs)
        except BaseException:
            self.ctx.close()
            self.model.close()
            raise
        self.n_ctx: int = self.ctx.n_ctx
        self.n_slots: int = cfg.n_slots
        self.metadata: dict[str, str] = self.model.metadata
        store = None
        if cfg.prefix_store_dir is not None:
            try:
                store = PrefixStore(
                    Path(cfg.prefix_store_dir),
                    model_key=f"{self.model.file_identity}-{cfg.kv_type}",
                    ram_bytes=cfg.prefix_store_ram_bytes,
                    disk_bytes=cfg.prefix_store_disk_bytes,
                    min_tokens=cfg.prefix_store_min_tokens,
                )
            except OSError as e:  # a full or read-only disk: serve without it rather than not at all
                log.warning("prefix store off: cannot use %s: %s", cfg.prefix_store_dir, e)
        self.store = store
        self._sched = Scheduler(
            self.model,
            self.ctx,
            cfg.n_slots,
            cfg.max_queue,
            store,
            park_min_prefill=cfg.park_min_prefill,
            drafting=drafting,
            queue_timeout_s=cfg.queue_timeout_s,
        )
        self._closed = False

    def _drafting(self, cfg: EngineConfig) -> DraftConfig | None:
        """N-gram drafting, where rejected drafts can be taken back out of the KV cache: not
        for recurrent state, nor for a sliding-window cache that keeps only the window (a
        partial removal there would drop the whole sequence)."""
        if spec_mode(cfg.spec) == "off":
            return None
        if not self.model.kv_rollback or (self.model.n_swa > 0 and not cfg.swa_full):
            log.info("speculative decoding off: this model's cache cannot take back rejected drafts")
            return None
        return cfg.draft

    # -- vocabulary -------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: list[int]) -> str:
        return self.model.detokenize(tokens)

    def is_eog(self, token: int) -> bool:
        return self.model.is_eog(token)

    @property
    def bos_text(self) -> str:
        return self.model.bos_text

    @property
    def eos_text(self) -> str:
        return self.model.eos_text

    # -- generation -------------------------------------------------------------------------
    @contextlib.contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Announce a request while its prompt is prepared, then pass the arrival to `generate`:
        an idle engine waits briefly for requests sent together to start them together."""
        arrival = self._sched.announce()
        try:
            yield arrival
        finally:
            arrival.withdraw()

    async def generate(
        self, prompt: list[int], sampling: Sampling, arrival: Arrival | None = None
    ) -> AsyncIterator[Step]:
        """Stream the continuation of `prompt`.

        Raises ContextLengthExceeded / Overloaded / InvalidRequest before the first step.
        Closing the iterator (or cancelling its task) stops the sequence at the next step;
        the slot is freed and its cache kept for reuse.
        """
        req = self._sched.submit(prompt, sampling, asyncio.get_running_loop(), arrival)
        try:
            while True:
                item = await req.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self._sched.cancel(req)

    # -- status -----------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        c = self._sched.counters
        ledger = self._sched.slots.ledger
        st = self.store.stats() if self.store is not None else None
        return EngineStats(
            slots_total=self.n_slots,
            slots_busy=self._sched.slots.busy_count,
            queue_depth=self._sched.queue_depth(),
            loaded=not self._closed,
            prompt_tokens_cached=c.prompt_tokens_cached,
            prompt_tokens_processed=c.prompt_tokens_processed,
            tokens_generated=c.tokens_generated,
            requests_total=c.requests_total,
            requests_cancelled=c.requests_cancelled,
            kv_cells_used=ledger.used,
            kv_cells_total=ledger.n_cells,
            prefix_store_hits=st.hits if st else 0,
            prefix_store_tokens_restored=st.tokens_restored if st else 0,
            prefix_store_entries=st.entries if st else 0,
            spec_drafted_tokens=c.spec_drafted,
            spec_accepted_tokens=c.spec_accepted,
        )

    def close(self) -> None:
        """Stop the scheduler (running streams end "cancelled"), flush the store, free memory."""
        if self._closed:
            return
        self._closed = True
        self._sched.close()
        self.ctx.close()
        self.model.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
