"""oodserve's inference service: no torch, no method-specific code; the model file says it all.

Kept free of imports: ``python -m service`` must set ``PROMETHEUS_MULTIPROC_DIR`` before
prometheus-client is first imported.
"""
