"""Per-user inference over HTTP: serving bundles, micro-batching, the event store, metrics and the app.

`bundle` needs only torch and safetensors; `app` needs the `serve` extra (fastapi, uvicorn).
"""
