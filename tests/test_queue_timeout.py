"""The engine's queue timeout through the real API (issue 15, "a client that waits too long
gets a clean timeout error"): with the only slot busy, a request still waiting after
`queue_timeout_s` gets a 503 `queue_timeout` with Retry-After in its dialect's shape (the
openai and anthropic SDKs), while the running stream is untouched."""

from __future__ import annotations

import threading
from pathlib import Path

import anthropic
import openai
import pytest
from live_server import running_server

from appliance.api import ModelRegistry, catalog_resolver, create_app
from quantization.catalog import load_catalog
from runtimes.llamacpp.engine import EngineConfig
from runtimes.llamacpp.runtime import LlamaCppRuntime

pytestmark = pytest.mark.slow
MODEL = "qwen2.5-coder-0.5b-instruct"
USER = [{"role": "user", "content": "Say hi."}]


def test_a_request_waiting_too_long_gets_a_clean_503(qwen_path: Path) -> None:
    cfg = EngineConfig(model_path=qwen_path, n_ctx=2048, n_slots=1, n_threads=2, n_threads_batch=2,
                       queue_timeout_s=1.0)
    rt = LlamaCppRuntime.load(load_catalog().get(MODEL), cfg)
    registry = ModelRegistry(catalog_resolver())
    registry.add(rt, roles=["main"])
    try:
        with running_server(create_app(registry)) as live:
            oa = openai.OpenAI(base_url=live.api_base, api_key="unused", max_retries=0, timeout=120)
            started = threading.Event()
            long_run: dict = {}

            def occupy() -> None:  # holds the one slot for several seconds
                stream = oa.chat.completions.create(model="default", messages=USER, stream=True,  # type: ignore[arg-type]
                                                    max_tokens=300, extra_body={"ignore_eos": True})
                text = []
                for chunk in stream:
                    started.set()
                    if chunk.choices and chunk.choices[0].delta.content:
                        text.append(chunk.choices[0].delta.content)
                    if chunk.choices and chunk.choices[0].finish_reason:
                        long_run["finish"] = chunk.choices[0].finish_reason
                long_run["text"] = "".join(text)

            t = threading.Thread(target=occupy)
            t.start()
            assert started.wait(60)
            with pytest.raises(openai.APIStatusError) as e:
                oa.chat.completions.create(model="default", messages=USER, max_tokens=5)  # type: ignore[arg-type]
            assert e.value.status_code == 503
            assert e.value.body["code"] == "queue_timeout"  # type: ignore[index]
            assert "queue timeout is 1 s" in e.value.body["message"]  # type: ignore[index]
            assert int(e.value.response.headers["retry-after"]) >= 1

            an = anthropic.Anthropic(base_url=live.base_url, api_key="unused", max_retries=0, timeout=120)
            with pytest.raises(anthropic.APIStatusError) as a:
                an.messages.create(model="default", max_tokens=5, messages=USER)  # type: ignore[arg-type]
            assert a.value.status_code == 503
            assert a.value.body["type"] == "error"  # type: ignore[index]
            assert a.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
            t.join(120)
            assert long_run.get("finish") == "length" and long_run["text"]  # the stream went on
            assert rt.engine.stats().queue_depth == 0
    finally:
        rt.engine.close()
