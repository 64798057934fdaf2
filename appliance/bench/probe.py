"""Before measuring: what a target is (models, version, context), and a calibrated warm-up.

The warm-up doubles as calibration: two prompts of known word counts give the server's
own token count per word, so "a 4k-token prompt" means 4k tokens of that model's
tokenizer without the bench needing the tokenizer.
"""

from __future__ import annotations

from typing import Any

import httpx

from appliance.bench import synthetic
from appliance.bench.client import RequestResult, chat
from appliance.bench.settings import Calibration, Settings, TargetState
from appliance.bench.workloads import chat_body, is_context_error

CALIBRATION_WORDS = (100, 700, 250)


async def _get_json(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> tuple[Any, httpx.Headers]:
    r = await client.get(url, headers=headers, timeout=10.0)
    r.raise_for_status()
    return r.json(), r.headers


def _context_from(models: dict[str, Any], props: dict[str, Any] | None) -> int | None:
    """Per-request context: llama-server's /props, vLLM's max_model_len, or a `context_length`."""
    if props:
        n = (props.get("default_generation_settings") or {}).get("n_ctx")
        if isinstance(n, int) and n > 0:
            return n
    for m in models.get("data") or []:
        for key in ("max_model_len", "context_length", "n_ctx"):
            if isinstance(m.get(key), int) and m[key] > 0:
                return m[key]
    return None


async def describe(client: httpx.AsyncClient, state: TargetState) -> None:
    """GET /v1/models (and llama-server's /props); pick the model. Sets state.error on failure."""
    t = state.target
    try:
        models, headers = await _get_json(client, t.url + "/models", t.headers())
    except (httpx.HTTPError, ValueError) as e:
        state.error = f"GET {t.url}/models failed: {type(e).__name__}: {e}".strip()
        return
    ids = [m.get("id") for m in models.get("data") or [] if m.get("id")]
    state.info["models"] = models.get("data") or []
    state.info["server_header"] = headers.get("server")
    props = None
    try:
        props, _ = await _get_json(client, t.root + "/props", t.headers())
        state.info["props"] = {
            k: props.get(k)
            for k in ("build_info", "total_slots", "model_path", "chat_template_caps")
            if k in props
        }
    except (httpx.HTTPError, ValueError):
        pass
    state.n_ctx = _context_from(models, props)
    if t.model:
        state.model = t.model
        if ids and t.model not in ids:
            state.warnings.append(f"model {t.model!r} not listed by the server (it lists {ids})")
    elif ids:
        state.model = ids[0]
    else:
        state.error = "the server lists no models and none was given (model=ID)"


def _needs_retry_without_ignore_eos(res: RequestResult) -> bool:
    return res.status in (400, 422) and "ignore_eos" in (res.error or "")


async def _calibration_request(client, state: TargetState, settings: Settings, words: int, tag: str):
    messages = synthetic.story_messages(words, f"{settings.run_id}-{tag}", seed=f"cal{words}")
    body = chat_body(state, settings, messages, 4)
    res = await chat(client, state.target, body, settings.timeout_s)
    if state.ignore_eos and not res.ok and _needs_retry_without_ignore_eos(res):
        state.ignore_eos = False
        state.warnings.append("server rejects ignore_eos; output length relies on the prompt")
        body = chat_body(state, settings, messages, 4)
        res = await chat(client, state.target, body, settings.timeout_s)
    if res.ok and res.prompt_tokens is None:
        # Some servers (llama_cpp.server) report usage only without streaming.
        plain = await chat(client, state.target, body | {"stream": False}, settings.timeout_s)
        res.prompt_tokens = plain.prompt_tokens
    return res


async def warm_up(client: httpx.AsyncClient, state: TargetState, settings: Settings) -> None:
    """Calibrate prompt sizes and warm the server; a failure here takes the target out."""
    state.ignore_eos = settings.ignore_eos
    small, *larger = CALIBRATION_WORDS
    a = await _calibration_request(client, state, settings, small, "cal-a")
    if not a.ok:
        state.error = f"warm-up request failed: {a.error}"
        return
    for words in larger:  # a smaller second point when the context is tiny
        b = await _calibration_request(client, state, settings, words, f"cal-{words}")
        if b.ok:
            break
        if not is_context_error(b):
            state.error = f"warm-up request failed: {b.error}"
            return
    if b.ok and a.prompt_tokens and b.prompt_tokens and b.prompt_tokens > a.prompt_tokens:
        slope = (b.prompt_tokens - a.prompt_tokens) / (words - small)
        state.calibration = Calibration(slope=slope, overhead=a.prompt_tokens - slope * small, measured=True)
    else:
        state.warnings.append("no usable prompt_tokens in usage: prompt sizes are estimates")
    if settings.warmup:
        messages = synthetic.story_messages(50, f"{settings.run_id}-warm", seed="warm")
        res = await chat(client, state.target, chat_body(state, settings, messages, 16), settings.timeout_s)
        if not res.ok:
            state.error = f"warm-up request failed: {res.error}"
