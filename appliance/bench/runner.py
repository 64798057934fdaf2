"""Warm-up, repetitions and interleaving: the method that survives a noisy machine.

For every repetition, every case is run on every target in turn (A B A B ...), so drift
in the machine's speed (another job, thermal throttling) hits all targets alike. A
target that fails is reported and dropped; the others go on.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import httpx

from appliance.bench import probe
from appliance.bench import traces as trace_mod
from appliance.bench.sample import Sample
from appliance.bench.settings import Settings, TargetState
from appliance.bench.targets import Target
from appliance.bench.workloads import cases, run_case


class Reporter(Protocol):
    def begin(self, total_steps: int) -> None: ...
    def target(self, state: TargetState) -> None: ...
    def sample(self, sample: Sample) -> None: ...
    def end(self) -> None: ...


class NullReporter:
    def begin(self, total_steps: int) -> None: ...
    def target(self, state: TargetState) -> None: ...
    def sample(self, sample: Sample) -> None: ...
    def end(self) -> None: ...


def load_traces(settings: Settings) -> list[trace_mod.Trace]:
    if not {"trace", "session", "restart"} & set(settings.workloads):
        return []
    return [trace_mod.load(spec, settings.trace_max_tokens or 32) for spec in settings.traces]


def _lost(sample: Sample) -> bool:
    """A failure that means the server is gone (connection refused/reset), not a bad request."""
    err = sample.error or ""
    return (
        sample.status == "error"
        and ("ConnectError" in err or "RemoteProtocolError" in err)
        and (sample.workload != "concurrency" or sample.metrics.get("streams_served", 0) == 0)
    )


async def run_targets(
    targets: list[Target],
    settings: Settings,
    reporter: Reporter | None = None,
    loaded_traces: list[trace_mod.Trace] | None = None,
) -> tuple[list[TargetState], list[Sample]]:
    """Measure `targets` together; returns each target's state and every sample."""
    reporter = reporter or NullReporter()
    loaded = loaded_traces if loaded_traces is not None else load_traces(settings)
    todo = cases(settings, loaded)
    states = [TargetState(target=t) for t in targets]
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=settings.timeout_s) as client:
        reporter.begin(len(todo) * settings.repeat * len(states))
        for state in states:
            await probe.describe(client, state)
            if state.alive:
                await probe.warm_up(client, state, settings)
            reporter.target(state)
        for rep in range(settings.repeat):
            for case in todo:
                for state in states:
                    if not state.alive:
                        sample = Sample(state.target.name, case.workload, case.key, rep, "error", state.error)
                    else:
                        sample = await run_case(client, state, settings, case, rep)
                        if _lost(sample):
                            state.error = f"lost mid-run: {sample.error}"
                            reporter.target(state)
                    samples.append(sample)
                    reporter.sample(sample)
    return states, samples


def describe_states(states: list[TargetState]) -> dict[str, Any]:
    return {
        s.target.name: {
            **s.target.describe(),
            "model": s.model,
            "error": s.error,
            "warnings": s.warnings,
            "info": s.info,
            "n_ctx": s.n_ctx,
            "ignore_eos": s.ignore_eos,
            "calibration": dict(s.calibration.__dict__),
        }
        for s in states
    }


def run(
    targets: list[Target],
    settings: Settings,
    reporter: Reporter | None = None,
    loaded_traces: list[trace_mod.Trace] | None = None,
) -> tuple[list[TargetState], list[Sample]]:
    """Synchronous entry point (one event loop per group of targets)."""
    return asyncio.run(run_targets(targets, settings, reporter, loaded_traces))
