"""What a coding agent (main) and its side tasks (small) need from a model: context, speed, size,
and the verdict on a fit against those needs (its tier, and the warnings a user should see).

The thresholds live here, apart from the search that fits and the key that ranks, because both
of those and the explanation text are judged against the same numbers.
"""

from __future__ import annotations

from appliance.planner.types import Option, Role
from appliance.units import kilo

# Context. OpenCode's first request is ~7.2k tokens (system prompt + tool schemas).
AGENT_PROMPT_TOKENS = 8192
MAIN_MIN_CTX = 8192  # cannot even hold the agent's prompt below this: rejected
MAIN_POOR_CTX = 16384  # holds the prompt, little history: a poor main model
MAIN_GOOD_CTX = 32768  # room for a real session before compaction
SMALL_MIN_CTX = 4096  # a title request is ~550 tokens
SMALL_CTX = 8192  # side tasks gain nothing from more; the rest is main's
# The KV read per decoded token is costed at this fill: an agent's session sits well past its
# ~8k-token prompt; a title or summary request is a few hundred to a couple of thousand tokens.
TYPICAL_CTX: dict[Role, int] = {"main": 16384, "small": 2048}

# Tiers: below GOOD a candidate only wins when nothing usable fits; below POOR it is a last resort.
# A strong model at 5 tok/s beats a weak one at 50 for an agent; 2 tok/s is not a working agent.
GOOD_TOKS: dict[Role, float] = {"main": 5.0, "small": 15.0}
POOR_TOKS: dict[Role, float] = {"main": 2.0, "small": 5.0}
WARN_TOKS: dict[Role, float] = {"main": 10.0, "small": 15.0}  # usable, but say it is slow
GOOD_PROMPT_S, POOR_PROMPT_S = 120.0, 300.0  # CPU: seconds to prefill the agent's first prompt

# Side-task models.
SMALL_MAX_PARAMS = 4.5e9
# Titles and summaries need no frontier model: from this quality up (a 1.5B instruct model) side-task
# candidates count as equal and the smallest footprint wins, leaving memory to main.
SMALL_ENOUGH_QUALITY = 20.0


def tier(role: Role, n_ctx: int, tok_s: float, prefill: float | None) -> int:
    """2: usable for the role; 1: poor; 0: bad. The weakest of context, decode and prefill."""
    if role == "main":
        ctx = 2 if n_ctx >= MAIN_GOOD_CTX else 1 if n_ctx >= MAIN_POOR_CTX else 0
    else:
        ctx = 2 if n_ctx >= SMALL_CTX else 1
    speed = 2 if tok_s >= GOOD_TOKS[role] else 1 if tok_s >= POOR_TOKS[role] else 0
    prompt = 2
    if role == "main" and prefill:
        secs = AGENT_PROMPT_TOKENS / prefill
        prompt = 2 if secs <= GOOD_PROMPT_S else 1 if secs <= POOR_PROMPT_S else 0
    return min(ctx, speed, prompt)


def fit_warnings(role: Role, opt: Option, n_ctx: int, tok_s: float, prefill: float | None) -> list[str]:
    """What falls short of the role's needs, in words a user acts on."""
    out = []
    if role == "main" and n_ctx < MAIN_POOR_CTX:
        out.append(f"context {kilo(n_ctx)} < 16k: an agent's prompt alone is ~8k tokens, a poor main model")
    elif role == "main" and n_ctx < MAIN_GOOD_CTX:
        out.append(f"context {kilo(n_ctx)} < 32k: long sessions will hit the limit and compact early")
    if role == "small" and n_ctx < SMALL_CTX:
        out.append(f"context {kilo(n_ctx)} < 8k: long summaries will not fit and go to main")
    if tok_s < WARN_TOKS[role]:
        out.append(f"~{tok_s:.0f} tok/s is slow for {'an agent loop' if role == 'main' else 'side tasks'}")
    if role == "main" and prefill and AGENT_PROMPT_TOKENS / prefill > GOOD_PROMPT_S:
        out.append(
            f"the first ~8k-token prompt takes ~{AGENT_PROMPT_TOKENS / prefill:.0f} s to prefill on the "
            "CPU (later turns reuse the prefix)"
        )
    if opt.precision == 0:
        out.append(f"{opt.artifact.quant} ({opt.bpw:.1f} bits per weight): noticeable quality loss")
    if opt.splits_layers:
        n = opt.model.arch.n_layers
        out.append(
            f"{opt.n_gpu_layers} of {n + 1} layers on the GPU (llama.cpp -ngl {opt.n_gpu_layers}), the first "
            f"{n - max(opt.n_gpu_layers - 1, 0)} blocks in system RAM: RAM bandwidth bounds decode"
        )
    elif opt.placement == "gpu+ram":
        out.append(
            f"MoE experts of {opt.n_cpu_moe} of {opt.model.arch.n_layers} layers in system RAM (llama.cpp "
            f"--n-cpu-moe {opt.n_cpu_moe}): RAM bandwidth bounds decode"
        )
    return out
