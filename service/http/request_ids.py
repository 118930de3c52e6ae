"""Each request's id: the client's ``X-Request-ID`` if it is short and plain (letters, digits,
``._:@/+=-``), else a new one; sent back with every answer and put on every log line of the request."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.types import Scope

_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
request_id: ContextVar[str] = ContextVar("request_id", default="-")


def request_id_of(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value.decode() if _VALID_REQUEST_ID.fullmatch(value) else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestIdLogFilter(logging.Filter):
    """Puts the current request's id on every log record as ``request_id`` (``-`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True
