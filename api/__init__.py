"""Parley's OpenAI-compatible HTTP API, mounted at /v1/.

``views`` authenticate, parse and delegate; ``schemas`` validates request bodies;
``completions`` turns a validated request into gateway streams and OpenAI-shaped
results; ``errors`` and ``sse`` shape what goes back on the wire; ``openapi`` describes
it all at /v1/openapi.json.
"""
