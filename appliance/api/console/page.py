"""The console page itself: static HTML, CSS and JavaScript shipped in the package.

No build step, no template engine, nothing fetched from another host: the files under
static/ are served as they are, under exact paths (the middleware lets exactly these
through without a key, since the page must load to ask for one; every JSON endpoint it
then calls needs the key when keys are on). The Content-Security-Policy makes "no
third-party assets" a rule the browser enforces, not just a habit of the page.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

# path -> (file under static/, media type)
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console/console.css": ("console.css", "text/css; charset=utf-8"),
    "/console/icon.svg": ("icon.svg", "image/svg+xml"),
}
ACCESS_PATH = "/console/api/access"  # says whether a key is needed: public, like the page
PAGE_PATHS = frozenset({*PAGE_FILES, ACCESS_PATH})

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return files("appliance.api.console").joinpath("static", name).read_bytes()


def build_page_router() -> APIRouter:
    router = APIRouter()
    for path, (name, media_type) in PAGE_FILES.items():
        router.add_api_route(path, _server(name, media_type), methods=["GET"], include_in_schema=False)
    return router


def _server(name: str, media_type: str):
    """A handler for one fixed file (a closure, not a parameter: nothing a client sends picks
    the file)."""

    def serve() -> Response:
        return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)

    return serve
