"""Loading a llama.cpp model for `appliance serve`: fetch the GGUF, size the engine, load."""

from __future__ import annotations

import os
from collections.abc import Callable

from appliance.config import ServeConfig
from appliance.hardware.types import Hardware
from appliance.models.store import fetch
from appliance.paths import data_dir
from appliance.router.capacity import QUEUE_PER_SLOT
from appliance.serve.choice import LoadSpec
from runtimes.llamacpp.engine import EngineConfig
from runtimes.llamacpp.model import Model, gpu_offload
from runtimes.llamacpp.runtime import LlamaCppRuntime


def load_llamacpp(
    spec: LoadSpec, cfg: ServeConfig, hw: Hardware, log: Callable[[str], None]
) -> LlamaCppRuntime:
    """The engine in this process; the prefix store goes under the data dir, per model."""
    path = fetch(
        spec.model, spec.artifact, log=log, air_gapped=cfg.router.air_gapped, mirror=cfg.model_mirror
    )
    threads = cfg.threads or hw.cpu.physical_cores or os.cpu_count() or 1
    engine_cfg = EngineConfig(
        model_path=path,
        n_ctx=spec.n_ctx,
        n_slots=spec.slots,
        n_threads=threads,
        n_threads_batch=threads,
        kv_type=spec.kv_type,
        n_gpu_layers=spec.n_gpu_layers if hw.llama_gpu_offload else 0,
        n_cpu_moe=spec.n_cpu_moe,
        prefix_store_dir=(data_dir() / "prefix-cache" / spec.model.name) if cfg.prefix_store else None,
        spec=cfg.spec,
        # The router's count bound, also kept by the engine itself (exact under simultaneous arrivals).
        max_queue=QUEUE_PER_SLOT * spec.slots if cfg.router.max_queue is None else cfg.router.max_queue,
        queue_timeout_s=cfg.router.queue_timeout_s,
    )
    runtime = LlamaCppRuntime.load(spec.model, engine_cfg)
    if spec.n_cpu_moe:
        log(placement_line(runtime.engine.model))
    if spec.n_gpu_layers >= 0:
        log(layers_line(runtime.engine.model, spec.n_gpu_layers))
    return runtime


def placement_line(model: Model) -> str:
    """What llama.cpp applied of the plan's MoE split, from its own load report."""
    moved = model.load_report.overridden
    layers = sorted({int(name.split(".")[1]) for name in moved if name.startswith("blk.")})
    bufts = ", ".join(sorted(set(moved.values()))) or "-"
    return (
        f"placement: routed experts of {len(layers)} of {model.n_layers} layers in host memory "
        f"(--n-cpu-moe {model.n_cpu_moe}: {len(moved)} tensors moved to {bufts}); the rest on the "
        f"{'GPU' if gpu_offload() else 'CPU (this llama.cpp build has no GPU offload)'}"
    )


def layers_line(model: Model, planned: int) -> str:
    """What llama.cpp applied of the plan's split of a dense model (-ngl), from its own load log:
    a build without GPU offload logs nothing and runs every layer on the CPU."""
    applied = model.load_report.offloaded
    if applied is None:
        return (
            f"placement: the plan puts {planned} of {model.n_layers + 1} layers on the GPU (-ngl {planned}); "
            f"this llama.cpp build has no GPU offload: all {model.n_layers} blocks on the CPU"
        )
    on_gpu, of = applied
    return (
        f"placement: llama.cpp offloaded {on_gpu}/{of} layers to the GPU (-ngl {model.n_gpu_layers}: the "
        f"output layer and the last {max(on_gpu - 1, 0)} blocks); the first {of - max(on_gpu, 1)} blocks and "
        f"their KV in host memory"
    )
