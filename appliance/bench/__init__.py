"""`appliance bench`: tokens/sec of any OpenAI-compatible endpoints on the same workloads.

Operators choose hardware, models and quants by these numbers, and the serving issue
proves the engine by them, so the arithmetic lives in small, separately tested modules:
`client` (one timed streaming request), `workloads` (what is sent), `runner` (warm-up,
repetitions, interleaving), `stats`, `report`, `chart`, `compare`.
"""
