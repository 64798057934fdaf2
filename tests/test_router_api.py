"""Routing through the real HTTP API: headers, cloud via a provider on loopback, fallback,
refusals, keys, and the usage log.

See tests/routing_stack.py: the app assembled as `appliance serve` does, a fake OpenAI
provider on loopback (a real HTTP server: real providers cannot be reached here), the
scripted local runtime (this file tests routing, not generation); the client is the
official openai SDK.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from routing_stack import CLOUD_MODEL, KEY, KEY_ENV, Stack, open_stack

from appliance.api.guard import AccessPolicy
from appliance.keys import KeyStore

EASY = "hi! what does the word 'distributed' mean?"
HARD = (
    "Prove that there is no continuous function f from the reals to the reals that takes every "
    "value exactly twice. I need a complete proof, not a reference to a theorem."
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAwJ7mXbq3tG5u8Zz0ExampleKeyMaterial0123456789abcdef\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv(KEY_ENV, KEY)
    with open_stack() as s:
        yield s


def chat(stack: Stack, text: str, *, model: str = "default", headers: dict | None = None):
    raw = stack.client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers or {}
    )
    return raw.headers, raw.parse()


def test_easy_request_stays_local_with_headers(stack: Stack) -> None:
    headers, resp = chat(stack, EASY)
    assert headers["x-appliance-route"] == "local"
    assert headers["x-appliance-model"] == "local-model" == resp.model
    assert headers["x-appliance-reason"].startswith("tier:local(")
    assert resp.choices[0].message.content == "answered locally"
    assert stack.provider.requests == []


def test_cloud_by_header_model_and_tier(stack: Stack) -> None:
    for text, kwargs, reason in (
        (EASY, {"headers": {"x-appliance-route": "cloud"}}, "override:header"),
        (EASY, {"model": CLOUD_MODEL}, "override:model"),
        (HARD, {}, "tier:cloud("),
    ):
        headers, resp = chat(stack, text, **kwargs)
        assert headers["x-appliance-route"] == "cloud", (reason, dict(headers))
        assert headers["x-appliance-reason"].startswith(reason)
        assert headers["x-appliance-model"] == CLOUD_MODEL == resp.model
        assert resp.choices[0].message.content == "answered by the cloud"
    assert len(stack.provider.requests) == 3
    sent = stack.provider.requests[0]
    assert sent.body["model"] == "gpt-4o" and sent.headers["authorization"] == f"Bearer {KEY}"


def test_streamed_cloud_answer_carries_the_headers(stack: Stack) -> None:
    raw = stack.client.chat.completions.with_raw_response.create(
        model=CLOUD_MODEL, messages=[{"role": "user", "content": EASY}], stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-appliance-route"] == "cloud"
    assert raw.headers["x-appliance-reason"] == "override:model"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "answered by the cloud"


def test_provider_500s_fall_back_to_local(stack: Stack) -> None:
    stack.provider.fail_next(10, 500)
    headers, resp = chat(stack, EASY, headers={"x-appliance-route": "cloud"})
    assert headers["x-appliance-route"] == "local"
    assert headers["x-appliance-reason"] == "cloud-failed:all-failed,fallback"
    assert headers["x-appliance-model"] == "local-model"
    assert resp.choices[0].message.content == "answered locally"
    assert len(stack.provider.requests) == 2  # one try plus one retry, then local


def test_cloud_down_and_too_long_for_local_is_a_503(stack: Stack) -> None:
    stack.local.n_ctx = 64
    stack.provider.fail_next(10, 503)
    r = stack.http.post("/v1/chat/completions", json={
        "model": "default", "messages": [{"role": "user", "content": "summarise: " + "word " * 2000}],
    })
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "cloud_unavailable"
    assert r.headers["x-appliance-reason"].startswith("capacity:context,cloud-failed:")
    assert stack.local.records == []  # never started locally


def test_secret_bound_for_the_cloud_is_refused(stack: Stack) -> None:
    r = stack.http.post("/v1/chat/completions", json={
        "model": CLOUD_MODEL, "messages": [{"role": "user", "content": f"deploy with this key:\n{PEM}"}],
    })
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "cloud_not_allowed"
    assert r.headers["x-appliance-reason"] == "override:model,privacy:private_key"
    assert "PRIVATE KEY" not in r.text
    assert stack.provider.requests == []
    # Without the explicit cloud choice the same request is simply served locally.
    r = stack.http.post("/v1/chat/completions", json={
        "model": "default", "messages": [{"role": "user", "content": f"{HARD}\n{PEM}"}],
    })
    assert r.status_code == 200 and r.headers["x-appliance-route"] == "local"


def test_the_provider_key_never_reaches_a_client(stack: Stack) -> None:
    seen: list[str] = []
    stack.provider.fail_next(2, 401, message="Incorrect API key provided.")
    for body, headers in (
        ({"model": CLOUD_MODEL, "messages": [{"role": "user", "content": EASY}]}, {}),
        ({"model": CLOUD_MODEL, "messages": [{"role": "user", "content": EASY}], "stream": True}, {}),
        ({"model": "default", "messages": [{"role": "user", "content": HARD}]}, {}),
    ):
        r = stack.http.post("/v1/chat/completions", json=body, headers=headers)
        seen.append(r.text + repr(dict(r.headers)))
    seen.append(stack.http.get("/metrics").text + stack.http.get("/v1/models").text)
    assert all(KEY not in s for s in seen)
    assert KEY not in repr(stack.routing.cloud)


def test_every_request_is_in_the_usage_log(stack: Stack, tmp_path: Path) -> None:
    chat(stack, EASY)
    chat(stack, EASY, model=CLOUD_MODEL)
    stack.http.post("/v1/chat/completions", json={"model": CLOUD_MODEL, "messages": [
        {"role": "user", "content": PEM}]})
    assert stack.routing.usage is not None
    stack.routing.usage.flush()
    db = sqlite3.connect(tmp_path / "usage.sqlite")
    rows = db.execute("SELECT route, served_model, provider, prompt_tokens, cost_usd, status FROM requests "
                      "ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["local", "cloud", "refused"]
    assert rows[0][1:3] == ("local-model", "local")
    assert rows[1][1:3] == (CLOUD_MODEL, "fake-openai") and rows[1][3] > 0 and rows[1][4] > 0
    assert rows[2][5] == "403"


def test_anthropic_messages_route_through_the_same_router(stack: Stack) -> None:
    """The official anthropic SDK against /v1/messages: same decisions, same headers."""
    import anthropic

    base = str(stack.http.base_url).rstrip("/")
    client = anthropic.Anthropic(base_url=base, api_key="client-key", max_retries=0)
    for model, text, route, reason in (
        ("default", EASY, "local", "tier:local("),
        (CLOUD_MODEL, EASY, "cloud", "override:model"),
        ("default", HARD, "cloud", "tier:cloud("),
    ):
        raw = client.messages.with_raw_response.create(
            model=model, max_tokens=32, messages=[{"role": "user", "content": text}]
        )
        assert raw.headers["x-appliance-route"] == route
        assert raw.headers["x-appliance-reason"].startswith(reason)
        msg = raw.parse()
        assert msg.content[0].text == f"answered {'locally' if route == 'local' else 'by the cloud'}"
    with client.messages.with_streaming_response.create(
        model=CLOUD_MODEL, max_tokens=32, stream=True, messages=[{"role": "user", "content": EASY}]
    ) as streamed:
        assert streamed.headers["x-appliance-route"] == "cloud"
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model=CLOUD_MODEL, max_tokens=32, messages=[{"role": "user", "content": PEM}])
    assert refused.value.response.headers["x-appliance-reason"] == "override:model,privacy:private_key"


# -- clients written for llama-server (issue 18) ----------------------------------------------
def test_unknown_name_is_served_locally_and_a_cloud_name_still_goes_to_the_cloud(stack: Stack) -> None:
    headers, resp = chat(stack, EASY, model="gpt-3.5-turbo")  # no cloud model by that name
    assert headers["x-appliance-route"] == "local" and resp.model == "local-model"
    assert headers["x-appliance-reason"].endswith(",model:unknown")
    headers, _ = chat(stack, EASY, model=CLOUD_MODEL)
    assert headers["x-appliance-route"] == "cloud" and headers["x-appliance-reason"] == "override:model"


def test_cloud_gets_logprobs_and_refuses_what_it_cannot_take(stack: Stack) -> None:
    messages = [{"role": "user", "content": EASY}]
    stack.client.chat.completions.create(model=CLOUD_MODEL, messages=messages, logprobs=True, top_logprobs=2)
    sent = stack.provider.requests[-1].body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    with pytest.raises(openai.BadRequestError) as grammar:
        stack.client.chat.completions.create(
            model=CLOUD_MODEL, messages=messages, extra_body={"grammar": 'root ::= "a"'}
        )
    assert "grammar" in grammar.value.message
    with pytest.raises(openai.BadRequestError) as n:
        stack.client.chat.completions.create(model=CLOUD_MODEL, messages=messages, n=2)
    assert n.value.param == "n"
    assert len(stack.provider.requests) == 1  # neither refused request reached the provider


def test_a_keys_daily_budget_keeps_its_requests_local_once_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-key budgets (issue 15): the keys file (what `appliance keys add --daily-budget` and
    `keys budget` write) is read by the running server; the fake cloud provider bills each
    request at its configured price."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv(KEY_ENV, KEY)
    keys = KeyStore(tmp_path / "keys.json")
    alice = keys.add("alice", daily_budget_usd=0.000001)
    bob = keys.add("bob")
    with open_stack(access=AccessPolicy(keys=keys, require_key=True)) as s:
        def ask(key: str, **headers: str):
            client = s.client.with_options(api_key=key)
            return client.chat.completions.with_raw_response.create(
                model="default", messages=[{"role": "user", "content": HARD}], extra_headers=headers
            )

        assert ask(alice).headers["x-appliance-route"] == "cloud"  # nothing spent yet
        assert s.routing.usage.key_spent_today("alice") > 0.000001
        over = ask(alice)
        assert over.headers["x-appliance-route"] == "local"
        assert over.headers["x-appliance-reason"].endswith(",key-budget")
        assert ask(bob).headers["x-appliance-route"] == "cloud"  # another key's budget is its own
        with pytest.raises(openai.RateLimitError) as refused:  # asked for the cloud explicitly
            ask(alice, **{"x-appliance-route": "cloud"})
        assert refused.value.body["code"] == "budget_exceeded"
        assert "API key" in refused.value.body["message"]
        keys.set_budget("alice", None)  # the running server sees the change at once
        assert ask(alice).headers["x-appliance-route"] == "cloud"
        assert len(s.provider.requests) == 3
