"""The real Claude Code (2.1.330, headless `claude -p`) against our /v1/messages on loopback.

`make tools` installs Claude Code into .tools/. The runtime behind the API is scripted
(tests/fakes/scripted_runtime.py, a fake of OUR engine) so the run is quick and its
answers are known: the first turn calls Claude Code's Write tool, the second answers in
text. What this proves is the dialect: Claude Code's real requests (system blocks, a
`system` turn, 12 tools, adaptive thinking, output_config) are accepted, its streamed
tool_use is executed, and its tool_result comes back to the runtime as a tool message.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fakes.scripted_runtime import ScriptedRuntime, text_events, tool_call_events
from live_server import running_server

from appliance.api import ModelRegistry, catalog_resolver, create_app
from runtimes.base import ChatRequest, CompletionRequest, Event

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CLAUDE = ROOT / ".tools" / "claude-code" / "node_modules" / ".bin" / "claude"
MODEL = "qwen2.5-coder-0.5b-instruct"
KEY = "local-appliance-key"


def claude_env(home: Path, base_url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM")}
    return {
        **keep,
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def test_claude_code_writes_a_file_through_our_messages_api(tmp_path: Path) -> None:
    assert CLAUDE.exists(), "run `make tools` first (installs Claude Code into .tools/)"
    work = tmp_path / "work"
    work.mkdir()
    target = work / "hello.txt"

    def script(req: ChatRequest | CompletionRequest) -> list[Event]:
        assert isinstance(req, ChatRequest)
        if req.messages[-1]["role"] == "tool":
            return text_events("Done: hello.txt is written.")
        args = json.dumps({"file_path": str(target), "content": "hi from the appliance\n"})
        return tool_call_events("Write", args, call_id="toolu_write1")

    runtime = ScriptedRuntime(id=MODEL, n_ctx=200_000, script=script)
    registry = ModelRegistry(catalog_resolver())
    registry.add(runtime, roles=["main"])
    with running_server(create_app(registry, api_key=KEY)) as server:
        run = subprocess.run(
            [str(CLAUDE), "-p", "Create hello.txt saying hi.", "--model", MODEL, "--allowedTools", "Write"],
            cwd=work,
            env=claude_env(tmp_path / "home", server.base_url),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Done: hello.txt is written." in run.stdout
    assert target.read_text() == "hi from the appliance\n"

    first, second = (r.request for r in runtime.records[-2:])
    assert isinstance(first, ChatRequest) and isinstance(second, ChatRequest)
    assert first.tools and any(t["function"]["name"] == "Write" for t in first.tools)
    assert first.messages[0]["role"] == "system" and first.sampling.max_tokens
    call = next(m for m in second.messages if m.get("tool_calls"))
    assert call["tool_calls"][0]["id"] == "toolu_write1"
    result = second.messages[-1]
    assert result["role"] == "tool" and result["tool_call_id"] == "toolu_write1"
