"""Property-based API tests (issue 15): schemathesis generates bodies from our own `/openapi.json`
(which describes each route's request model, appliance/api/openapi.py) for every POST route of a
real `appliance serve` with a real small model (SmolLM2-135M). No case may get a 5xx, and every
4xx must be in its route's error shape: OpenAI's `{"error": {message, type, ...}}`, Anthropic's
`{"type": "error", "error": {type, message}}` on /v1/messages*.

Generated `max_tokens`-like fields are capped (a schema tweak here, not in the product) so a case
costs a few tokens of generation; APPLIANCE_SCHEMATHESIS_EXAMPLES sets the cases per route
(1000 by default). `/api/unload` is left out: a valid case would unload the model under test.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from serve_process import Served, make_home, start_serve

EXAMPLES = int(os.environ.get("APPLIANCE_SCHEMATHESIS_EXAMPLES", "1000"))
CAPS = {"max_tokens": 4, "max_completion_tokens": 4, "max_tokens_to_sample": 4, "n": 2, "best_of": 2,
        "top_logprobs": 3, "logprobs": 3}
ROUTES = r"^/(v1/)?(chat/completions|completions|messages|messages/count_tokens)$"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> Iterator[Served]:
    home = make_home(tmp_path_factory.mktemp("schemathesis"), smollm_path)
    s = start_serve(home, "--ctx", "4096", "--slots", "2", "--no-prefix-store")
    try:
        yield s
    finally:
        s.stop()


def _cap(node: Any, key: str | None = None) -> None:
    """Give every integer schema under a capped property a `maximum`, and drop its `null`
    alternative: a null `max_tokens` means "up to the context", minutes of generation a case."""
    if isinstance(node, dict):
        if key in CAPS and isinstance(node.get("anyOf"), list):
            node["anyOf"] = [alt for alt in node["anyOf"] if alt.get("type") != "null"] or node["anyOf"]
            node.pop("default", None)
        if key in CAPS and node.get("type") == "integer":
            node["maximum"] = min(node.get("maximum", CAPS[key]), CAPS[key])
        for k, v in node.items():
            if k == "properties" and isinstance(v, dict):
                for name, sub in v.items():
                    _cap(sub, name)
            else:
                _cap(v, key if k in ("anyOf", "oneOf", "allOf") else None)
    elif isinstance(node, list):
        for item in node:
            _cap(item, key)


def _operations(served: Served) -> list:
    raw = httpx.get(served.base + "/openapi.json", timeout=30).json()
    _cap(raw)
    for name in ("ChatCompletionBody", "CompletionBody"):  # omitted, it means "up to the context"
        body = raw["components"]["schemas"][name]
        body["required"] = sorted({*body.get("required", []), "max_tokens"})
    schema = schemathesis.openapi.from_dict(raw).include(path_regex=ROUTES, method="POST")
    return [result.ok() for result in schema.get_all_operations()]


def _check(case: Any, served: Served) -> None:
    response = case.call(base_url=served.base, timeout=120)
    status = response.status_code
    assert status < 500, (case.path, case.body, status, response.text[:500])
    if 400 <= status < 500:
        body = response.json()
        if case.path.startswith("/v1/messages"):
            assert body.get("type") == "error", body
            assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str)
        else:
            assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["type"], str), body


@pytest.mark.slow
def test_post_routes_never_5xx_and_4xx_in_their_shape(served: Served) -> None:
    """Hypothesis drives each operation's strategy directly (schemathesis' pytest plugin does not
    run under this pytest), EXAMPLES cases per route, derandomized so a failure reproduces."""
    operations = _operations(served)
    assert len(operations) == 6, [op.label for op in operations]
    for op in operations:
        started = time.monotonic()

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def run(case: Any) -> None:
            _check(case, served)

        run()
        print(f"{op.label}: {EXAMPLES} cases in {time.monotonic() - started:.1f} s")
