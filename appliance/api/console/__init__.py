"""The console: a page the appliance serves at `/` for the people beside the machine.

Is it running and how fast (machine, models, live tok/s), did anything leave the building
(the routing audit), what did the cloud cost (spend, from `appliance usage`'s code), and
what bench measured. `page.py` serves the static files, `routes.py` the JSON they read,
`facts.py` is what serve tells it about the machine and the plan.
"""

from appliance.api.console.facts import ModelFacts, ServeFacts
from appliance.api.console.page import PAGE_PATHS, build_page_router
from appliance.api.console.routes import build_console_router

__all__ = ["PAGE_PATHS", "ModelFacts", "ServeFacts", "build_console_router", "build_page_router"]
