"""Run an app under a real uvicorn on loopback in a background thread, for tests.

Tests talk to it over real HTTP with real clients (the openai SDK, httpx), so what
they check is what an agent sees: headers, SSE framing, disconnects. The socket is
bound before the server starts, so there is no free-port race.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp


@dataclass(frozen=True)
class LiveServer:
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """What an OpenAI client takes as `base_url`."""
        return f"{self.base_url}/v1"


@contextmanager
def running_server(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    log_level: str = "warning",
    start_timeout_s: float = 30.0,
    **uvicorn_options: object,
) -> Iterator[LiveServer]:
    """Serve `app` until the block exits; yields where it listens. `uvicorn_options` go to
    uvicorn.Config (e.g. ssl_certfile/ssl_keyfile: the base URL is then still http://...)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=3, **uvicorn_options  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the test server exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start within {start_timeout_s} s")
            time.sleep(0.01)
        yield LiveServer(host, port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
