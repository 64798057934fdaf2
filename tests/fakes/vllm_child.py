"""A stand-in for vLLM's OpenAI server, run as a real child process by the supervisor tests.

Real vLLM takes minutes to start here (tests/test_vllm.py does that, once); what these tests
exercise is the supervisor's handling of a process: start, /health, death, hangs, restarts,
process groups. So this script takes vLLM's command line (`--host --port --served-model-name`,
the rest ignored), answers `/health` and the OpenAI routes with the fake provider's streaming
code over a real socket, and misbehaves on request through environment variables:

FAKE_VLLM_EXIT=N        exit with N at once (a start that fails)
FAKE_VLLM_DIE_AFTER_S=S exit 1 this long after listening (a child that keeps dying)
FAKE_VLLM_TOKEN_S=S     delay between streamed words (default 0.01)
FAKE_VLLM_WORDS=N       words in every answer (default 200)
FAKE_VLLM_GRANDCHILD=F  start a `sleep` child like vLLM's engine process; write its pid to F
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `fakes`

import uvicorn

from fakes.openai_provider import FakeOpenAI
from fakes.provider_base import Reply


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--served-model-name", default="fake")
    args, _ = p.parse_known_args()
    if code := os.environ.get("FAKE_VLLM_EXIT"):
        print(f"fake vLLM: failing on purpose with {code}", flush=True)
        return int(code)
    if pid_file := os.environ.get("FAKE_VLLM_GRANDCHILD"):
        engine = subprocess.Popen(["sleep", "600"])
        Path(pid_file).write_text(str(engine.pid))
    if die_after := os.environ.get("FAKE_VLLM_DIE_AFTER_S"):
        threading.Timer(float(die_after), lambda: os._exit(1)).start()
    token_s = float(os.environ.get("FAKE_VLLM_TOKEN_S", "0.01"))
    answer = " ".join(f"w{i}" for i in range(int(os.environ.get("FAKE_VLLM_WORDS", "200"))))
    fake = FakeOpenAI(models=[args.served_model_name], reply=Reply(text=answer), token_s=token_s)

    @fake.app.get("/health")
    async def health() -> dict:
        return {}

    uvicorn.run(fake.app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
