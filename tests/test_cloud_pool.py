"""CloudPool: retries, backoff, cooldown, fallback order, CloudUnavailable, keys.

Providers are fakes (tests/fakes/*_provider.py): real HTTP servers on loopback standing
in for cloud providers that cannot be reached here. Time is injected (a fake clock and
a recorded sleep) so cooldown and backoff are checked exactly and quickly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.anthropic_provider import FakeAnthropic
from fakes.openai_provider import FakeOpenAI
from fakes.provider_base import Reply
from pydantic import ValidationError

from runtimes.base import ChatRequest, CloudUnavailable, Event, InvalidRequest, Sampling, UpstreamError, Usage
from runtimes.upstream.config import CloudConfig, Price
from runtimes.upstream.pool import CloudPool, CloudStream

PRIMARY_KEY = "sk-primary-0123456789abcdef"
BACKUP_KEY = "sk-ant-backup-0123456789abcdef"
ENV = {"PRIMARY_KEY": PRIMARY_KEY, "BACKUP_KEY": BACKUP_KEY}
USER = [{"role": "user", "content": "Prove that sqrt(2) is irrational."}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def primary() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=PRIMARY_KEY, models=["gpt-up"]) as p:
        yield p


@pytest.fixture
def backup() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=BACKUP_KEY, models=["claude-up"], reply=Reply(text="From the backup.")) as p:
        yield p


def config(primary: FakeOpenAI, backup: FakeAnthropic, **kw) -> CloudConfig:
    return CloudConfig.model_validate(
        {
            "providers": [
                {
                    "name": "primary",
                    "kind": "openai",
                    "base_url": primary.api_base,
                    "api_key_env": "PRIMARY_KEY",
                    "max_retries": 2,
                    "timeout_s": 5,
                    "models": {
                        "frontier": {
                            "upstream": "gpt-up",
                            "price": {"input": 2.0, "output": 8.0},
                            "context": 128000,
                        }
                    },
                },
                {
                    "name": "backup",
                    "kind": "anthropic",
                    "base_url": backup.base_url,
                    "api_key_env": "BACKUP_KEY",
                    "max_retries": 1,
                    "timeout_s": 5,
                    "models": {
                        "frontier": {
                            "upstream": "claude-up",
                            "price": {"input": 3.0, "output": 15.0},
                            "context": 200000,
                        }
                    },
                },
            ],
            "cooldown_after": 3,
            "cooldown_s": 30,
            "backoff_base_s": 0.1,
            "backoff_max_s": 2.0,
            "seed": 1,
            **kw,
        }
    )


def pool_for(cfg: CloudConfig, clock: Clock, env: dict[str, str] = ENV) -> CloudPool:
    return CloudPool(cfg, environ=env, clock=clock, sleep=clock.sleep)


def run(pool: CloudPool, model: str = "frontier") -> tuple[CloudStream, list[Event]]:
    async def go() -> tuple[CloudStream, list[Event]]:
        stream = pool.chat(ChatRequest(model=model, messages=USER, sampling=Sampling()))
        try:
            return stream, [ev async for ev in stream]
        finally:
            await stream.aclose()
            await pool.close()

    return asyncio.run(asyncio.wait_for(go(), 20))


def text(events: list[Event]) -> str:
    return "".join(e.content for e in events)


def test_first_provider_serves_and_reports_usage_provider_and_price(primary, backup) -> None:
    primary.reply = Reply(text="Assume p/q in lowest terms.")
    stream, events = run(pool_for(config(primary, backup), Clock()))
    assert text(events) == "Assume p/q in lowest terms."
    assert stream.served is not None and stream.served.provider == "primary"
    assert stream.served.upstream_model == "gpt-up" and stream.served.attempts == 1
    usage = events[-1].usage
    assert usage is not None and usage.completion_tokens == 5
    assert stream.served.cost(usage) == pytest.approx((usage.prompt_tokens * 2 + 5 * 8) / 1e6)
    assert primary.requests[0].body["model"] == "gpt-up" and backup.requests == []


def test_429_then_success_is_retried_at_the_same_provider_after_retry_after(primary, backup) -> None:
    clock = Clock()
    primary.fail_next(1, 429, retry_after=1.5)
    stream, events = run(pool_for(config(primary, backup), clock))
    assert text(events) == "Hello from the fake provider."
    assert stream.served is not None and stream.served.provider == "primary" and stream.served.attempts == 2
    assert clock.sleeps == [1.5] and len(primary.requests) == 2 and backup.requests == []


def test_repeated_500s_bench_the_provider_and_the_backup_serves(primary, backup) -> None:
    clock = Clock()
    pool = pool_for(config(primary, backup), clock)
    primary.fail_next(3, 500)
    stream, events = run(pool)
    assert text(events) == "From the backup."
    assert stream.served is not None and stream.served.provider == "backup" and stream.served.attempts == 4
    assert len(primary.requests) == 3  # 1 try + 2 retries, then benched
    # Exponential backoff (base 0.1 s, doubled) with jitter in [0.5, 1.5) of each step.
    assert len(clock.sleeps) == 2
    assert 0.05 <= clock.sleeps[0] < 0.15 and 0.1 <= clock.sleeps[1] < 0.3
    assert pool.cooling_down() == {"primary": 30.0}

    # While benched, the primary is not even asked.
    stream, _ = run(pool)
    assert stream.served is not None and stream.served.provider == "backup" and len(primary.requests) == 3

    # After the cooldown it gets one probe; a success clears it.
    clock.now += 31
    stream, _ = run(pool)
    assert stream.served is not None and stream.served.provider == "primary" and len(primary.requests) == 4
    assert pool.cooling_down() == {}


def test_all_providers_down_is_cloud_unavailable_without_keys(primary, backup, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    primary.fail_next(10, 503, message=f"down (key {PRIMARY_KEY})")
    backup.fail_next(10, 529, message="Overloaded")
    pool = pool_for(config(primary, backup), Clock())
    with pytest.raises(CloudUnavailable) as exc:
        run(pool)
    assert exc.value.reason == "all-failed" and exc.value.status == 503
    assert "primary" in str(exc.value) and "backup" in str(exc.value)
    assert len(primary.requests) == 3 and len(backup.requests) == 2
    assert "primary:503, primary:503, primary:503, backup:529, backup:529" in caplog.text
    assert "down (key" not in caplog.text  # upstream messages may quote prompts: not logged
    for secret in (PRIMARY_KEY, BACKUP_KEY):
        assert secret not in str(exc.value) and secret not in caplog.text and secret not in repr(pool)

    # The primary is benched (3 failures): the next request goes only to the backup, whose
    # third failure benches it too; after that nothing is sent at all.
    with pytest.raises(CloudUnavailable):
        run(pool)
    assert len(primary.requests) == 3 and len(backup.requests) == 3
    with pytest.raises(CloudUnavailable) as again:
        run(pool)
    assert again.value.reason == "cooling-down" and len(primary.requests) == 3 and len(backup.requests) == 3


def test_bad_request_is_not_retried_nor_sent_elsewhere(primary, backup) -> None:
    primary.fail_next(1, 400, message="messages: invalid")
    with pytest.raises(InvalidRequest):
        run(pool_for(config(primary, backup), Clock()))
    assert len(primary.requests) == 1 and backup.requests == []


def test_auth_failure_moves_on_without_retrying(primary, backup) -> None:
    env = {**ENV, "PRIMARY_KEY": "sk-stale-key-000000000"}
    stream, _ = run(pool_for(config(primary, backup), Clock(), env))
    assert stream.served is not None and stream.served.provider == "backup"
    assert len(primary.requests) == 1
    assert any("refused the credentials" in f for f in stream.failures)


def test_drop_after_first_token_is_an_error_not_a_silent_switch(primary, backup) -> None:
    primary.reply = Reply(text="a b c d e f")
    primary.drop_next(1, after_chunks=2)
    with pytest.raises(UpstreamError):
        run(pool_for(config(primary, backup), Clock()))
    assert backup.requests == []  # the client already had tokens: no retry elsewhere


def test_missing_key_variable_skips_the_provider(primary, backup, caplog) -> None:
    caplog.set_level(logging.WARNING)
    pool = pool_for(config(primary, backup), Clock(), {"BACKUP_KEY": BACKUP_KEY})
    stream, _ = run(pool)
    assert stream.served is not None and stream.served.provider == "backup" and primary.requests == []
    assert "PRIMARY_KEY is not set" in caplog.text


def test_unknown_model_is_cloud_unavailable(primary, backup) -> None:
    with pytest.raises(CloudUnavailable) as exc:
        run(pool_for(config(primary, backup), Clock()), model="nope")
    assert exc.value.reason == "unknown-model"


def test_jitter_is_seeded_and_backoff_grows() -> None:
    err = UpstreamError("x")

    def delays(seed: int) -> list[float | None]:
        pool = CloudPool(CloudConfig(seed=seed, backoff_base_s=1.0, backoff_max_s=100.0), environ={})
        return [pool.backoff_s(i, err) for i in range(5)]

    assert delays(7) == delays(7) and delays(7) != delays(8)
    assert all(d is not None and 0.5 * 2**i <= d < 1.5 * 2**i for i, d in enumerate(delays(7)))
    capped = CloudPool(CloudConfig(backoff_base_s=1.0, backoff_max_s=3.0), environ={})
    assert capped.backoff_s(6, err) == 3.0


def test_config_from_yaml_and_pool_api(tmp_path: Path) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_text(
        "cloud:\n"
        "  providers:\n"
        "    - name: openai\n      kind: openai\n      base_url: https://api.openai.com/v1\n"
        "      api_key_env: OPENAI_API_KEY\n"
        "      models:\n"
        "        gpt-big: {upstream: gpt-5, price: {input: 1.25, output: 10}, context: 400000}\n"
        "        gpt-small: gpt-5-mini\n"
    )
    cfg = CloudConfig.from_yaml(path)
    pool = CloudPool(cfg, environ={"OPENAI_API_KEY": "sk-live-abcdefghijkl"})
    assert pool.models() == ["gpt-big", "gpt-small"] and pool.has_model("GPT-BIG")
    assert pool.n_ctx("gpt-big") == 400000 and pool.n_ctx("gpt-small") == 0
    price = pool.price("gpt-big")
    assert price is not None and price.cost(Usage(prompt_tokens=1_000_000, completion_tokens=100_000)) == 2.25
    cached = Price(input=3.0, output=15.0, cached_input=0.3)
    assert cached.cost(Usage(prompt_tokens=1_000_000, cached_tokens=900_000)) == pytest.approx(0.3 + 0.27)
    assert "sk-live" not in repr(pool) and "sk-live" not in repr(cfg)
    rt = pool.runtime("gpt-big")
    assert rt.id == "gpt-big" and rt.n_ctx == 400000 and rt.stats().loaded
    with pytest.raises(KeyError):
        pool.runtime("nope")
    with pytest.raises(ValidationError, match="api_key_env"):
        CloudConfig.model_validate(
            {
                "providers": [
                    {
                        "name": "x",
                        "kind": "openai",
                        "base_url": "https://x",
                        "models": {},
                        "headers": {"Authorization": "Bearer sk-oops"},
                    }
                ]
            }
        )
