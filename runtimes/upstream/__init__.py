"""Clients for servers we forward to: cloud providers (OpenAI-compatible, Anthropic) and
local children (vLLM), each a Runtime; and the cloud pool that retries and falls back."""
