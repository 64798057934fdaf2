"""A routed appliance over real HTTP for tests: scripted local model + fake cloud provider.

Assembled the way `appliance serve` does it (`build_routing` from a config). The cloud
provider is the fake OpenAI server (a real HTTP server on 127.0.0.1; real providers
cannot be reached here); the local model is the scripted runtime, since these tests
are about routing, not generation. Callers set APPLIANCE_HOME and KEY_ENV first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import openai
from fakes.openai_provider import FakeOpenAI
from fakes.provider_base import Reply
from fakes.scripted_runtime import ScriptedRuntime, text_events
from live_server import running_server

from appliance.api import ModelRegistry, create_app
from appliance.api.guard import AccessPolicy
from appliance.api.routing import Routing
from appliance.config import ServeConfig
from appliance.serve.routing import build_routing

KEY = "sk-live-DO-NOT-LEAK-0123456789"
KEY_ENV = "ROUTER_TEST_KEY"
CLOUD_MODEL = "gpt-frontier"
PRICE = {"input": 2.5, "output": 10.0}


@dataclass
class Stack:
    client: openai.OpenAI
    http: httpx.Client
    provider: FakeOpenAI
    local: ScriptedRuntime
    routing: Routing


def cloud_section(api_base: str, price: dict = PRICE) -> dict:
    return {
        "backoff_base_s": 0.001, "backoff_max_s": 0.01,
        "providers": [{
            "name": "fake-openai", "kind": "openai", "base_url": api_base, "api_key_env": KEY_ENV,
            "max_retries": 1, "models": {CLOUD_MODEL: {"upstream": "gpt-4o", "price": price}},
        }],
    }


@contextmanager
def open_stack(
    local_text: str = "answered locally", cloud_text: str = "answered by the cloud", price: dict = PRICE,
    access: AccessPolicy | None = None,
) -> Iterator[Stack]:
    local = ScriptedRuntime(id="local-model", n_ctx=4096, script=text_events(local_text))
    registry = ModelRegistry()
    registry.add(local, roles=["main"])
    with FakeOpenAI(api_key=KEY, reply=Reply(text=cloud_text)) as provider:
        router = {"reference_cloud_model": CLOUD_MODEL}
        cfg = ServeConfig(cloud=cloud_section(provider.api_base, price), router=router)
        routing = build_routing(cfg, registry)
        app = create_app(registry, routing=routing, close_runtimes_on_shutdown=True, access=access)
        with running_server(app) as live:
            client = openai.OpenAI(base_url=live.api_base, api_key="client-key", max_retries=0)
            with httpx.Client(base_url=live.base_url, timeout=30) as http:
                yield Stack(client, http, provider, local, routing)
