"""oodserve's inference service: no torch, no method-specific code; the model file says it all.

A request's way through it, room by room: ``http/`` (connections, middlewares, routes, the error
body) -> ``pipeline/`` (admission, deadline, decoding, batching, verdicts) -> the served model from
``models/`` (model directory, loading, runtime, registry, sync, management); ``metrics/`` beside,
reported into by every room. At the top: ``app`` builds and wires the parts, ``settings`` reads the
``OODSERVE_*`` variables, ``errors`` holds the error types every room raises, ``__main__`` runs it.

Kept free of imports: ``python -m service`` must set ``PROMETHEUS_MULTIPROC_DIR`` before
prometheus-client is first imported.
"""
