"""The real app (`create_app`) over a scripted runtime, served by uvicorn in its own process.

For tests that measure the server process itself (its memory while a client streams a huge
body), which a server thread inside the test process cannot show. Prints `READY` once
listening.

Run: `python tests/fakes/scripted_app_server.py --port 8099 [--max-body-mb 32]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `fakes`

from appliance.api import ModelRegistry, catalog_resolver, create_app
from appliance.api.limits import MIB, Limits
from fakes.scripted_runtime import ScriptedRuntime

MODEL = "qwen2.5-coder-0.5b-instruct"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-body-mb", type=float, default=32)
    args = ap.parse_args()
    registry = ModelRegistry(catalog_resolver())
    registry.add(ScriptedRuntime(id=MODEL, n_ctx=32768), roles=["main"])
    app = create_app(registry, limits=Limits(max_body_bytes=int(args.max_body_mb * MIB)))
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    print("READY", flush=True)  # uvicorn binds within milliseconds; the test polls /health anyway
    server.run()


if __name__ == "__main__":
    main()
