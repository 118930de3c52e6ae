"""One error type for everything a request can run into: an HTTP status, a machine-readable code and a
message naming the problem.

The pipeline and the models raise :class:`ServiceError` subclasses without knowing how they travel;
the HTTP layer (service/http/errors.py) turns each into the JSON body its protocol prescribes.
"""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.headers = headers or {}


class UploadTooLarge(ServiceError):
    status = 413
    code = "upload_too_large"


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before it was answered; the message says where it was."""

    status = 504
    code = "deadline_exceeded"


class Overloaded(ServiceError):
    """Refused at once because a bounded queue is full: retry later (503 + Retry-After)."""

    status = 503
    code = "overloaded"
