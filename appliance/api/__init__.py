"""The HTTP API: OpenAI-compatible routes over whatever runtimes a ModelRegistry holds."""

from appliance.api.app import create_app
from appliance.api.registry import ModelNotFound, ModelRegistry, catalog_resolver

__all__ = ["ModelNotFound", "ModelRegistry", "catalog_resolver", "create_app"]
