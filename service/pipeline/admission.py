"""Whether a request gets in: one decision, and the one place that says why a request is refused for
want of room (503 + Retry-After), whichever way it came in.

- Before the body is read, the HTTP layer's early refusals (service/http/refusals.py) ask :func:`room`
  for one image: a ``POST /predict`` whose model's queue has no room is answered at once.
- ``/predict`` and ``/v2/.../infer`` ask :func:`admit` once their body is in and the image count is
  known; the room they are given is held for their images (announced to the batcher: a batch
  forming now waits for them) until the images are queued or given up.

A model's queue has room while queued and announced images together stay within ``max_queue``, and
nothing is let in while the server shuts down. (The decode pool bounds its own queue per image,
service/pipeline/decodepool.py: a different resource, reached only after admission.)
"""

from __future__ import annotations

from service.errors import ServiceError
from service.pipeline.batcher import Announcement, Batcher


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
