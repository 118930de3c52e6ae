"""Whether a request gets in: one decision, and the one place that says why a request is refused for
want of room (503 + Retry-After), whichever way it came in.

- ``python -m service``'s HTTP protocol and the request middleware ask :func:`refusal` as soon as a
  request's line is parsed: a request over the connection limit, or a ``POST /predict`` whose
  model's queue has no room, is answered before its body is read. Under overload refusing is most
  of what the server does, so it has to cost little.
- ``/predict`` and ``/v2/.../infer`` ask :func:`admit` once their body is in and the image count is
  known; the room they are given is held for their images (announced to the batcher: a batch
  forming now waits for them) until the images are queued or given up.

Both weigh a model's queue with :func:`room`: queued and announced images together stay within
``max_queue``, and nothing is let in while the server shuts down. (The decode pool bounds its own
queue per image, service/decodepool.py: a different resource, reached only after admission.)
"""

from __future__ import annotations

import urllib.parse

from starlette.types import Scope

from service.batcher import Announcement, Batcher
from service.connections import OVER_CONNECTION_LIMIT
from service.errors import ServiceError
from service.registry import ModelRegistry

# The paths ``refusal`` may refuse; the protocol asks only about these (the connection limit is
# marked by the protocol itself, and counted by the middleware).
EARLY_PATHS = frozenset({"/predict"})

Refusal = tuple[str | None, ServiceError]  # the endpoint to count it under (None: no route) and the error


class QueueFull(ServiceError):
    status = 503
    code = "queue_full"


def room(batcher: Batcher, images: int) -> QueueFull | None:
    """Why ``batcher`` cannot take ``images`` more now, or None: the admission decision."""
    if batcher.closing:
        return QueueFull("the server is shutting down", headers={"Retry-After": "1"})
    waiting = batcher.waiting
    if waiting + images > batcher.max_queue:
        return QueueFull(
            f"model '{batcher.name}' has {waiting} images queued or on their way (limit {batcher.max_queue}); "
            "retry shortly",
            headers={"Retry-After": "1"},
        )
    return None


def admit(batcher: Batcher, images: int) -> Announcement:
    """Let ``images`` in, holding their room until they are submitted (use it as a context manager
    around decoding and :meth:`Batcher.submit`), or raise the refusal."""
    if (refused := room(batcher, images)) is not None:
        raise refused
    return batcher.announce(images)


def refusal(registry: ModelRegistry, scope: Scope) -> Refusal | None:
    """What to refuse from the request line alone, before routing or reading the body."""
    if limit := scope.get(OVER_CONNECTION_LIMIT):
        return None, ServiceError(
            f"the server has {limit} connections open already; retry shortly",
            code="too_many_connections",
            status=503,
            headers={"retry-after": "1", "connection": "close"},
        )
    if scope["path"] not in EARLY_PATHS or scope["method"] != "POST":
        return None
    query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1")) if scope["query_string"] else {}
    try:
        served = registry.get(query.get("model", [None])[0], query.get("version", [None])[0])
    except ServiceError:
        return None  # the route answers 404 (or 503 while loading): no load to shed
    refused = room(served.batcher, 1)  # the image count is in the body: at least one
    return None if refused is None else ("/predict", refused)
