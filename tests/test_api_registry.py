"""Model id resolution: the names agents really send all reach the right runtime."""

from __future__ import annotations

import pytest
from fakes.scripted_runtime import ScriptedRuntime

from appliance.api.registry import ModelNotFound, ModelRegistry, catalog_resolver
from runtimes.base import RuntimeStats


def _registry(**kw) -> tuple[ModelRegistry, ScriptedRuntime, ScriptedRuntime]:
    big = ScriptedRuntime(id="qwen2.5-coder-0.5b-instruct")
    small = ScriptedRuntime(id="smollm2-135m-instruct")
    reg = ModelRegistry(**kw)
    reg.add(big, roles=["main"], aliases=["coder"])
    reg.add(small, roles=["small"])
    return reg, big, small


def test_exact_alias_role_and_case() -> None:
    reg, big, small = _registry()
    assert reg.resolve("qwen2.5-coder-0.5b-instruct") is big
    assert reg.resolve("QWEN2.5-Coder-0.5B-Instruct") is big
    assert reg.resolve("coder") is big
    assert reg.resolve("default") is big
    assert reg.resolve("small") is small
    assert reg.resolve("  Small ") is small


@pytest.mark.parametrize("prefix", ["appliance/", "openai/", "local/", "Appliance/"])
def test_provider_prefixes_are_stripped(prefix: str) -> None:
    reg, big, small = _registry()
    assert reg.resolve(prefix + "qwen2.5-coder-0.5b-instruct") is big
    assert reg.resolve(prefix + "small") is small


def test_unknown_prefix_and_unknown_model() -> None:
    reg, _, _ = _registry()
    with pytest.raises(ModelNotFound):
        reg.resolve("anthropic/qwen2.5-coder-0.5b-instruct")
    with pytest.raises(ModelNotFound):
        reg.resolve("gpt-4o")
    with pytest.raises(ModelNotFound):
        reg.resolve("appliance/")


def test_catalog_aliases_as_dict_and_callable() -> None:
    reg, big, _ = _registry(catalog_aliases={"Qwen-Coder": "qwen2.5-coder-0.5b-instruct"})
    assert reg.resolve("qwen-coder") is big
    assert reg.resolve("local/QWEN-CODER") is big

    reg2, big2, small2 = _registry(catalog_aliases=catalog_resolver())
    assert reg2.resolve("qwen2.5-coder:0.5b") is big2  # alias from the catalog yaml
    assert reg2.resolve("appliance/smollm2") is small2


def test_catalog_model_not_loaded_says_so() -> None:
    reg, _, _ = _registry(catalog_aliases=catalog_resolver())
    with pytest.raises(ModelNotFound) as info:
        reg.resolve("gemma3-270m")
    assert info.value.catalog_id == "gemma-3-270m"


def test_main_role_falls_back_to_first_model() -> None:
    reg = ModelRegistry()
    first, second = ScriptedRuntime(id="a"), ScriptedRuntime(id="b")
    reg.add(first)
    reg.add(second)
    assert reg.resolve("default") is first and reg.resolve("main") is first
    assert reg.roles_of("a") == ["main"]
    reg.set_role("default", "b")  # the old name of the role still sets it
    assert reg.resolve("default") is second
    assert reg.roles_of("a") == []


def test_ready_follows_loading_flag_and_runtime_stats() -> None:
    reg = ModelRegistry(loading=True)
    assert not reg.ready
    rt = ScriptedRuntime(stats_value=RuntimeStats(loaded=False))
    reg.add(rt)
    assert not reg.ready
    reg.loading = False
    assert not reg.ready  # the runtime itself is not loaded yet
    rt.stats_value = RuntimeStats(loaded=True)
    assert reg.ready
    reg.remove(rt.id)
    assert not reg.ready
