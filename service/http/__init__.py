"""The HTTP layer: where a request comes in and its answer goes out.

The connection protocol ``python -m service`` runs (connections: head and body deadlines, size caps,
a drain that drops no accepted request), the middlewares every request passes (request ids, metrics,
the body cap, refusals decided from the request line), the routes (``/predict``, the Open Inference
Protocol v2 and its model repository extension, health, model listing, metrics) with their bodies
and OpenAPI documentation, and the one JSON error body. Routes hand the work to service/pipeline/ and
the served models of service/models/; nothing below this layer imports it.
"""
