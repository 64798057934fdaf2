"""`appliance serve`: the composition root, the one place that wires every layer together.

`choice` turns the plan and the user's pins into load specs, `llamacpp` and `vllm` load one
runtime each, `routing` assembles router, cloud client and usage log, `server` runs it all.
"""

from appliance.serve.server import serve

__all__ = ["serve"]
