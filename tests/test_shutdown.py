"""SIGTERM with streams in flight: `appliance serve` (a real small model) stops accepting, lets
the running streams finish, flushes the usage log and exits 0, as supervisors expect; streams
still running when the grace period ends get a clean error event in their dialect, not a cut."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import httpx
import openai
import pytest
from serve_process import MODEL, make_home, start_serve, usage_rows

ARGS = ("--ctx", "8192", "--slots", "4", "--no-prefix-store")


@pytest.mark.slow
def test_sigterm_drains_streams_and_exits_zero(tmp_path: Path, smollm_path: Path) -> None:
    served = start_serve(make_home(tmp_path, smollm_path), *ARGS)
    proc, base, home = served.proc, served.base, served.home
    try:
        results: dict[int, tuple[str, str | None]] = {}
        first_tokens = threading.Barrier(5, timeout=120)

        def stream(i: int) -> None:
            client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
            text, finish, waited = [], None, False
            try:
                chunks = client.chat.completions.create(
                    model=MODEL,
                    stream=True,
                    max_tokens=48,
                    messages=[{"role": "user", "content": f"Count from {i} to 100."}],
                )
                for chunk in chunks:
                    if chunk.choices:
                        text.append(chunk.choices[0].delta.content or "")
                        finish = chunk.choices[0].finish_reason or finish
                    if not waited:
                        waited = True
                        first_tokens.wait()
                results[i] = ("".join(text), finish)
            except openai.APIError as e:  # a clean error is acceptable; a cut connection is not
                results[i] = ("error", str(e))

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        first_tokens.wait()  # all four streams are running
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        rc = proc.wait(timeout=60)
    finally:
        served.stop()
    assert rc == 0, served.output()
    assert len(results) == 4
    for text, finish in results.values():
        assert text != "error", finish
        assert finish in ("stop", "length") and text
    # The usage log was flushed on the way out: one row per stream.
    assert sum(r["requests"] for r in usage_rows(home)) == 4


@pytest.mark.slow
def test_streams_past_the_grace_end_with_an_error_event(tmp_path: Path, smollm_path: Path) -> None:
    """A 2 s grace and answers that cannot finish in it (ignore_eos, 2 OpenAI and 2 Anthropic
    streams): each client sees its dialect's error event and a proper end, never a cut stream;
    the server still writes every usage row and exits 0."""
    served = start_serve(make_home(tmp_path, smollm_path, {"shutdown_grace_s": 2}), *ARGS)
    results: dict[int, list[tuple[str, str]]] = {}
    started = threading.Barrier(5, timeout=120)

    def openai_stream(i: int) -> None:
        body = {
            "model": MODEL, "stream": True, "max_tokens": 1500, "ignore_eos": True,
            "messages": [{"role": "user", "content": f"Count from {i} to 1000."}],
        }
        results[i] = _frames(served.base + "/v1/chat/completions", body, started)

    def anthropic_stream(i: int) -> None:
        body = {
            "model": MODEL, "stream": True, "max_tokens": 1500,
            "messages": [{"role": "user", "content": f"Write a very long story about the number {i}."}],
        }
        results[i] = _frames(served.base + "/v1/messages", body, started)

    threads = [threading.Thread(target=openai_stream, args=(i,)) for i in (0, 1)]
    threads += [threading.Thread(target=anthropic_stream, args=(i,)) for i in (2, 3)]
    try:
        for t in threads:
            t.start()
        started.wait()  # all four are streaming
        served.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        rc = served.proc.wait(timeout=60)
    finally:
        served.stop()
    assert rc == 0, served.output()
    assert sorted(results) == [0, 1, 2, 3], results
    for i in (0, 1):  # ignore_eos: the grace cannot be enough, so the error event is certain
        frames = results[i]
        assert frames[-1] == ("", "[DONE]"), frames[-3:]
        error = json.loads(frames[-2][1])["error"]
        assert error["code"] == "server_shutting_down" and error["type"] == "server_error", error
    for i in (2, 3):  # a story may end in time: then a whole answer, else Anthropic's error event
        kind, data = results[i][-1]
        if kind == "error":
            error = json.loads(data)
            assert error["type"] == "error" and error["error"]["type"] == "overloaded_error", error
        else:
            assert kind == "message_stop", results[i][-3:]
    assert sum(r["requests"] for r in usage_rows(served.home)) == 4


def _frames(url: str, body: dict, started: threading.Barrier) -> list[tuple[str, str]]:
    """The SSE frames of one stream as (event name, data); a cut connection fails the test
    (httpx raises on a chunked body that ends without its last chunk)."""
    frames: list[tuple[str, str]] = []
    waited = False
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        event = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                frames.append((event, line[len("data: "):]))
                event = ""
                if not waited:
                    waited = True
                    started.wait()
    return frames
