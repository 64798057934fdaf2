"""The OpenAI dialect: /v1/chat/completions, /v1/completions and /v1/models.

schemas.py validates the request bodies, convert.py turns them into the runtime's
dialect-neutral requests, responses.py turns runtime events into OpenAI objects and
stream chunks, and routes.py wires them to the shared dispatcher (appliance/api/routing.py).
"""
