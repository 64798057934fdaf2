"""`/openapi.json` that describes the request bodies the routes actually read.

The completion routes read their bodies themselves (`read_body(request, Model)`: the body limit,
the nesting check and our error shapes come before pydantic), so FastAPI sees no body parameter
and would publish none. `request_body(Model)` gives a route decorator the `openapi_extra` that
names the model as its JSON body; the model's nested definitions (`$defs`) become entries of
`components.schemas`, added by `install_openapi`, so every `$ref` resolves and clients and
property-based testers (tests/test_schemathesis.py) generate bodies that mean something.
The document follows the same access rules as every other route but /health (keys, Host).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

_REF = "#/components/schemas/{model}"
_COMPONENTS: dict[str, dict[str, Any]] = {}  # every body model and its definitions, by name


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is `model` (read by the route itself)."""
    schema = model.model_json_schema(ref_template=_REF, mode="validation")
    _COMPONENTS.update(schema.pop("$defs", {}))
    _COMPONENTS[model.__name__] = schema
    ref = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def install_openapi(app: FastAPI) -> None:
    """Serve the schema with the body models' components merged in (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(_COMPONENTS)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
