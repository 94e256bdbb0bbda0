"""One place that maps what went wrong to an HTTP status.

Handlers raise these; the app turns any of them into `{"error": message}`
with the status below, and the instance keeps serving.
"""


class AigcError(Exception):
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(AigcError):
    """The request cannot be used as sent (bad JSON, wrong type or shape, broken image)."""

    status = 400


class Unauthorized(AigcError):
    """The function requires a bearer token (AIGC_AUTH_TOKEN_SECRET) and the call lacks the right one."""

    status = 401


class ModelNotFound(AigcError):
    status = 404


class PayloadTooLarge(AigcError):
    status = 413


class UnsupportedMediaType(AigcError):
    """A body in an encoding the function cannot read."""

    status = 415


class TooManyRequests(AigcError):
    """More requests in flight than `max_inflight` allows."""

    status = 429


class ModelNotReady(AigcError):
    status = 503


class Timeout(AigcError):
    """The work took longer than `exec_timeout`."""

    status = 504


class ServerError(AigcError):
    status = 500
