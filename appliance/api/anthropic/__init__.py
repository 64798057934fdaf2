"""The Anthropic dialect: /v1/messages and /v1/messages/count_tokens (what Claude Code speaks).

schemas.py validates the request bodies, responses.py turns runtime events into Messages
objects and the Messages event stream, and routes.py translates requests (with
runtimes/upstream/anthropic_format.py) and wires them to the shared dispatcher.
"""
