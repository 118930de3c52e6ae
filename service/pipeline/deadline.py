"""A request's deadline: one absolute point on the monotonic clock, made once the request's body is in
and handed as it is to every step that may wait (decoding, the batcher's queue, inference).

Steps ask it how long is left instead of each turning it into a timeout of its own, so that every
step measures from the same instant and none can grant more time than the request has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic()
    started: float  # time.monotonic() when it was made: a client's own timeout counts from here

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        now = time.monotonic()
        return cls(now + seconds, now)

    def remaining(self) -> float:
        """Seconds left; never negative, so it is a valid timeout (0: give up at the first wait)."""
        return max(self.at - time.monotonic(), 0.0)

    def passed(self) -> bool:
        return time.monotonic() > self.at

    def capped(self, seconds: float | None) -> Deadline:
        """This deadline, or ``seconds`` after its start where that comes sooner (None: no cap)."""
        if seconds is None or self.started + seconds >= self.at:
            return self
        return Deadline(self.started + seconds, self.started)
