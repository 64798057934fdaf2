"""The fit planner: what this machine should serve for a coding agent and its side tasks.

For every catalog model and artifact the estimator says how much context fits in the
memory budget; decode speed comes from memory bandwidth. Main candidates are ranked: a
usable context and speed first (a coding agent's prompt alone is ~8k tokens), then the
model's quality, then vLLM on NVIDIA, then the precision class (the smallest quant within
it), then speed. The small side-task model goes in what main leaves; any adequate one will
do, so the smallest wins. Only models that can be obtained here are chosen; better ones
that need a download are suggested.

The modules, lowest first (each imports only those above it):

- `types`: the vocabulary: `Option` to fit, and the `Plan` with its candidates and rejections.
- `needs`: what each role needs (context, speed, size) and a fit's tier and warnings.
- `budget`: the memory budget and bandwidth of the machine, and the `Room` left while placing.
- `memory`: what one option occupies at a context, split into GPU and RAM bytes.
- `speed`: decode and prefill speed from bandwidth and FLOP/s.
- `fit`: the largest context one option reaches, as a candidate or a rejection.
- `options`: which runtimes and placements of a model are worth fitting for a role.
- `rank`: every model fitted for a role, best first.
- `explain`: why the choices won, the notes and the launch lines.
- `assemble`: `plan`, which pairs main and small and puts the plan together.
- `report`: `print_plan`, the plan as a person reads it (rich; imported on its own).
"""

from appliance.planner.assemble import assume_downloadable, obtainable, plan, pullable
from appliance.planner.budget import memory_budget, ram_reserve
from appliance.planner.types import (
    PRECISION,
    Available,
    Budget,
    Candidate,
    HardwareSummary,
    Memory,
    Option,
    Placement,
    Plan,
    Rejection,
    Role,
    Suggestion,
)

__all__ = [
    "PRECISION",
    "Available",
    "Budget",
    "Candidate",
    "HardwareSummary",
    "Memory",
    "Option",
    "Placement",
    "Plan",
    "Rejection",
    "Role",
    "Suggestion",
    "assume_downloadable",
    "memory_budget",
    "obtainable",
    "plan",
    "pullable",
    "ram_reserve",
]
