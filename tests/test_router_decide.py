"""The router's decision table: precedence, vetoes, capacity, tier, budget, sticky sessions.

The tier classifier and privacy guard are the real ones (appliance.router.tier /
privacy); the local runtime is the scripted stand-in, because only its context size
and slot stats matter to the router. The budget comes from a real UsageLog on disk.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from fakes.scripted_runtime import ScriptedRuntime

from appliance.router.decide import CloudSide, Decision, QueueFull, Refusal, Router, RouteRequest
from appliance.router.privacy import PrivacyGuard
from appliance.router.settings import PinRule, RouterSettings
from appliance.router.sticky import StickySessions, session_key
from appliance.router.tier import classify, latest_user_text
from appliance.usage.log import UsageLog
from runtimes.base import ChatRequest, RuntimeStats, Sampling
from runtimes.upstream.config import Price

EASY = "hi! what does the word 'distributed' mean in distributed systems?"
HARD = (
    "Prove that there is no continuous function f from the reals to the reals that takes every "
    "value exactly twice. I need a complete proof, not a reference to a theorem."
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAwJ7mXbq3tG5u8Zz0ExampleKeyMaterial0123456789abcdef\n"
    "-----END RSA PRIVATE KEY-----"
)
CLOUD_MODEL = "gpt-frontier"
SYSTEM = "You are a coding agent.\n<env>\n  Working directory: /srv/fintech/payments\n</env>"


def make_router(
    *,
    cloud: bool = True,
    runtime: ScriptedRuntime | None = None,
    budget_ok=lambda: True,
    classifier=classify,
    **settings,
) -> tuple[Router, ScriptedRuntime]:
    rt = runtime or ScriptedRuntime(id="local-model", n_ctx=4096)
    router = Router(
        RouterSettings(**settings),
        local_for=lambda name: rt,
        cloud=CloudSide(frozenset({CLOUD_MODEL}), CLOUD_MODEL, enabled=cloud),
        classify=classifier,
        latest_user_text=latest_user_text,
        guard=PrivacyGuard(settings.get("privacy_patterns", {})),
        pin_rules=settings.get("pin_local", []),
        budget_ok=budget_ok,
    )
    return router, rt


def rr(
    text: str, *, model: str = "default", header: str | None = None, system: str | None = None,
    extra: list[dict] | None = None, project: str | None = None, key: str | None = None,
    key_name: str = "",
) -> RouteRequest:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": text}, *(extra or [])]
    chat = ChatRequest(model=model, messages=messages, sampling=Sampling())
    return RouteRequest(model=model, chat=chat, route_header=header, project_header=project, api_key=key,
                        key_name=key_name)


def test_inspectors_agree_with_the_prompts_used_here() -> None:
    """Preconditions for the table below: if the classifier changes its mind, say so here."""
    assert classify(EASY).tier == "local"
    assert classify(HARD).tier == "cloud"
    assert PrivacyGuard({}).scan(PEM)


@pytest.mark.parametrize(
    ("kwargs", "request_", "route", "reason_prefix"),
    [
        # 1. explicit choice beats everything that is not a veto
        ({}, rr(HARD, header="local"), "local", "override:header"),
        ({}, rr(EASY, header="cloud"), "cloud", "override:header"),
        ({}, rr(EASY, model=CLOUD_MODEL), "cloud", "override:model"),
        ({}, rr(HARD, model="local"), "local", "override:model"),
        # 2. air-gapped: easy work stays local
        ({"air_gapped": True}, rr(EASY), "local", "tier:local"),
        ({"air_gapped": True, "air_gapped_refuse_tier": False}, rr(HARD), "local", "tier:cloud"),
        # 3. privacy and policy pins keep hard work local
        ({}, rr(HARD + "\n" + PEM), "local", "privacy:"),
        ({"privacy_patterns": {"customer_id": r"\bCUST-\d{6}\b"}}, rr(HARD + " for CUST-123456"),
         "local", "privacy:customer_id"),
        ({"pin_local": [PinRule(name="payments", project="/srv/fintech")]}, rr(HARD, system=SYSTEM),
         "local", "policy:payments"),
        ({"pin_local": [PinRule(project="/srv/fintech")]}, rr(HARD, project="/srv/fintech/x"),
         "local", "policy:project"),
        ({"pin_local": [PinRule(api_key_sha256=hashlib.sha256(b"team-key").hexdigest())]},
         rr(HARD, key="team-key"), "local", "policy:api_key"),
        ({"pin_local": [PinRule(model="secure-coder")]}, rr(HARD, model="secure-coder"),
         "local", "policy:model"),
        # a pin that does not match leaves the tier to decide
        ({"pin_local": [PinRule(project="/srv/other")]}, rr(HARD, system=SYSTEM), "cloud", "tier:cloud"),
        # 5. tier
        ({}, rr(HARD), "cloud", "tier:cloud("),
        ({}, rr(EASY), "local", "tier:local("),
    ],
)
def test_precedence_table(kwargs: dict, request_: RouteRequest, route: str, reason_prefix: str) -> None:
    router, _ = make_router(**kwargs)
    d = router.decide(request_)
    assert (d.route, d.reason.startswith(reason_prefix)) == (route, True), d
    assert d.model == (CLOUD_MODEL if route == "cloud" else "local-model")


@pytest.mark.parametrize(
    ("kwargs", "request_", "status", "in_reason"),
    [
        ({"air_gapped": True}, rr(EASY, model=CLOUD_MODEL), 403, "air-gapped"),
        ({"air_gapped": True}, rr(EASY, header="cloud"), 403, "air-gapped"),
        ({"air_gapped": True}, rr(HARD), 403, "air-gapped"),
        ({}, rr(EASY + "\n" + PEM, model=CLOUD_MODEL), 403, "privacy:"),
        ({"pin_local": [PinRule(project="/srv/fintech")]}, rr(EASY, header="cloud", system=SYSTEM),
         403, "policy:project"),
    ],
)
def test_vetoed_cloud_requests_are_refused_with_the_reason(
    kwargs: dict, request_: RouteRequest, status: int, in_reason: str
) -> None:
    router, _ = make_router(**kwargs)
    with pytest.raises(Refusal) as exc:
        router.decide(request_)
    assert exc.value.status == status and in_reason in exc.value.reason


def test_no_provider_or_no_budget_keeps_tier_cloud_local_and_says_why() -> None:
    router, _ = make_router(cloud=False)
    d = router.decide(rr(HARD))
    assert d.route == "local" and d.reason.startswith("tier:cloud(") and d.reason.endswith(",no-provider")
    router, _ = make_router(budget_ok=lambda: False)
    d = router.decide(rr(HARD))
    assert d.route == "local" and d.reason.endswith(",budget")
    with pytest.raises(Refusal) as exc:
        router.decide(rr(EASY, model=CLOUD_MODEL))
    assert (exc.value.status, exc.value.code) == (429, "budget_exceeded")


def test_capacity_context_goes_to_cloud_or_is_refused() -> None:
    long = "please summarise this log:\n" + "line of a very long log file\n" * 4000  # ~110k chars
    router, _ = make_router()
    d = router.decide(rr(long))
    assert (d.route, d.reason) == ("cloud", "capacity:context")
    router, _ = make_router(cloud=False)
    with pytest.raises(Refusal) as exc:
        router.decide(rr(long))
    assert exc.value.code == "context_length_exceeded" and exc.value.status == 400
    router, _ = make_router()
    with pytest.raises(Refusal) as exc:  # a secret that does not fit locally may not leave either
        router.decide(rr(long + PEM))
    assert exc.value.reason.startswith("privacy:") and exc.value.reason.endswith("capacity:context")


def test_queue_wait_over_the_bound_spills_to_cloud() -> None:
    rt = ScriptedRuntime(id="local-model", stats_value=RuntimeStats(2, 2, 3, True))
    router, _ = make_router(runtime=rt, queue_wait_bound_s=10)
    assert router.decide(rr(EASY)).route == "local"  # nothing measured yet: no grounds to spill
    router.queue.observe(8.0)  # (3 queued + 1) x 8 s / 2 slots = 16 s > 10 s
    d = router.decide(rr(EASY))
    assert d.route == "cloud" and d.reason.startswith("capacity:queue(")
    rt.stats_value = RuntimeStats(2, 1, 0, True)  # a free slot: no wait
    assert router.decide(rr(EASY)).route == "local"


def test_a_full_local_queue_spills_to_cloud_else_is_a_429_with_retry_after() -> None:
    """Count bound (max_queue, default 4 per slot) and wait bound: over either, the cloud if it
    may, else QueueFull (429, Retry-After), also for a request pinned local by its client."""
    rt = ScriptedRuntime(id="local-model", stats_value=RuntimeStats(2, 2, 8, True))  # 8 = 4 x 2 slots
    router, _ = make_router(runtime=rt)
    d = router.decide(rr(EASY))
    assert d.route == "cloud" and d.reason == "capacity:queue-full(8)"
    for r in (router.decide, make_router(runtime=rt, cloud=False)[0].decide):
        with pytest.raises(QueueFull) as exc:
            r(rr(EASY, header="local"))
        assert exc.value.status == 429 and exc.value.type == "rate_limit_error"
        assert exc.value.headers == {"Retry-After": "1"}  # nothing measured yet: the minimum
        assert exc.value.reason == "override:header,capacity:queue-full(8)"
    local_only, _ = make_router(runtime=rt, cloud=False)
    local_only.queue.observe(10.0)
    with pytest.raises(QueueFull) as exc:
        local_only.decide(rr(EASY))
    assert exc.value.reason.startswith("capacity:queue-full(8)")
    assert exc.value.headers == {"Retry-After": "5"}  # 10 s per request over 2 slots
    rt.stats_value = RuntimeStats(2, 2, 7, True)  # one below the count bound, and a short wait
    small, _ = make_router(runtime=rt, cloud=False, queue_wait_bound_s=1000)
    assert small.decide(rr(EASY)).route == "local"
    assert make_router(runtime=rt, cloud=False, max_queue=16)[0].decide(rr(EASY)).route == "local"
    with pytest.raises(QueueFull):  # the wait bound alone
        local_only.decide(rr(EASY))  # (7 + 1) x 10 s / 2 = 40 s > 30 s


def test_agent_session_keeps_its_route_across_tool_turns() -> None:
    calls: list[str] = []

    def counting(text: str):
        calls.append(text)
        return classify(text)

    router, _ = make_router(classifier=counting)
    first = router.decide(rr(HARD, system="agent system prompt"))
    assert first.route == "cloud"
    tool_turn = [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "file contents: hello"},
    ]
    again = router.decide(rr(HARD, system="agent system prompt", extra=tool_turn))
    assert again.route == "cloud" and again.reason == f"sticky:{first.reason}"
    assert len(calls) == 1  # the tool turn was not re-classified
    # An easy session stays local across its tool turns too, independently.
    easy = router.decide(rr(EASY, system="agent system prompt"))
    easy_again = router.decide(rr(EASY, system="agent system prompt", extra=tool_turn))
    assert easy.route == easy_again.route == "local" and easy_again.reason.startswith("sticky:")
    # A secret arriving in tool output still keeps that turn local: vetoes beat stickiness.
    leak = [*tool_turn[:1], {"role": "tool", "tool_call_id": "c1", "content": PEM}]
    assert router.decide(rr(HARD, system="agent system prompt", extra=leak)).route == "local"


def test_sticky_sessions_are_a_bounded_lru() -> None:
    s = StickySessions(2)
    s.put("a", "cloud", "x")
    s.put("b", "local", "y")
    assert s.get("a") == ("cloud", "x")  # touch a: b is now the oldest
    s.put("c", "local", "z")
    assert s.get("b") is None and s.get("a") is not None and len(s) == 2
    k1 = session_key([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    k2 = session_key([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "later turns do not change the key"}])
    assert k1 == k2 and k1 is not None and "u" not in k1


def test_budget_from_the_usage_log(tmp_path: Path) -> None:
    log = UsageLog(tmp_path / "usage.sqlite", {CLOUD_MODEL: Price(input=10.0, output=30.0)})
    router, _ = make_router(budget_ok=lambda: log.budget_ok(0.05))
    assert router.decide(rr(HARD)).route == "cloud"
    log.record(started=time.time(), route="cloud", reason="tier", requested_model="default",
               served_model=CLOUD_MODEL, provider="p", prompt_tokens=4000, completion_tokens=500)
    assert log.spent_today() == pytest.approx(0.055)
    d = router.decide(rr(HARD))
    assert d.route == "local" and d.reason.endswith(",budget")
    log.flush()
    reopened = UsageLog(tmp_path / "usage.sqlite", {})
    assert reopened.spent_today() == pytest.approx(0.055)  # the budget survives a restart
    log.close()
    reopened.close()


def test_reasons_never_carry_prompt_text() -> None:
    router, _ = make_router(privacy_patterns={"marker": "ZEBRA-MARKER"})
    for req in (rr("ZEBRA-MARKER " + HARD), rr("ZEBRA-MARKER", header="cloud"), rr(HARD)):
        try:
            d: Decision = router.decide(req)
            reason = d.reason
        except Refusal as r:
            reason = r.reason + r.message
        assert "ZEBRA" not in reason and "continuous" not in reason


def test_per_key_spend_is_counted_and_survives_a_restart(tmp_path: Path) -> None:
    log = UsageLog(tmp_path / "usage.sqlite", {CLOUD_MODEL: Price(input=10.0, output=30.0)})
    router, _ = make_router()
    router.key_budget_ok = lambda key: log.key_budget_ok(key, 0.05)
    assert router.decide(rr(HARD, key_name="alice")).route == "cloud"
    log.record(started=time.time(), route="cloud", reason="tier", requested_model="default",
               served_model=CLOUD_MODEL, provider="p", prompt_tokens=4000, completion_tokens=500,
               key_name="alice")
    d = router.decide(rr(HARD, key_name="alice"))
    assert d.route == "local" and d.reason.endswith(",key-budget")
    assert router.decide(rr(HARD, key_name="bob")).route == "cloud"
    assert router.decide(rr(HARD)).route == "cloud"  # no key, no key budget
    log.flush()
    reopened = UsageLog(tmp_path / "usage.sqlite", {})
    assert reopened.key_spent_today("alice") == pytest.approx(0.055)
    assert reopened.key_spent_today("bob") == 0.0
    log.close()
    reopened.close()
