"""Our exceptions. service/api/errors.py is the one place that turns them (and any other exception) into an
OpenAI-style error response.

ServiceError                 500 internal_error
├── InvalidRequest           400 invalid_request_error (names the offending `param`)
├── NotFound                 404 not_found_error
├── Conflict                 409 conflict_error (an Idempotency-Key reused with another body, or in use)
├── BudgetExhausted          400 budget_exhausted (the budget cannot pay for even one sample)
├── EngineUnavailable        503 engine_unavailable (starting, dead, or timed out)
│   └── EngineLost           503 engine_unavailable (one of several engines died under a call: redo it)
├── UpstreamError            502 upstream_error (a registered backend, e.g. a reward model, failed us)
├── StorageUnavailable       503 storage_unavailable (Redis did not answer)
└── Rejected                 refused at the front door, before any work; `reason` labels the metric
    ├── AuthenticationFailed 401 authentication_error, code invalid_api_key (missing, wrong or revoked key)
    ├── PermissionDenied     403 permission_error, code insufficient_scope
    ├── QuotaExceeded        429 rate_limit_exceeded, code = the limit hit, with Retry-After
    └── Overloaded           429 rate_limit_exceeded, code admission_*, with Retry-After (admission control)
"""

from __future__ import annotations

import math


class ServiceError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After, WWW-Authenticate) for this error."""
        return {}


class InvalidRequest(ServiceError):
    status_code = 400
    error_type = "invalid_request_error"


class NotFound(ServiceError):
    status_code = 404
    error_type = "not_found_error"


class Conflict(ServiceError):
    status_code = 409
    error_type = "conflict_error"


class BudgetExhausted(ServiceError):
    status_code = 400
    error_type = "budget_exhausted"


class EngineUnavailable(ServiceError):
    status_code = 503
    error_type = "engine_unavailable"


class UpstreamError(ServiceError):
    """An operator-registered backend (a reward model) was unreachable or answered something unusable."""

    status_code = 502
    error_type = "upstream_error"


class EngineLost(EngineUnavailable):
    """An engine died while a call ran on it and another engine can take the call; `generate` redoes it."""


class StorageUnavailable(ServiceError):
    """Redis, where corpora and calibrations live, did not answer."""

    status_code = 503
    error_type = "storage_unavailable"


class Rejected(ServiceError):
    """Refused before any work started: no key, wrong scope, over quota, or no room in the engine."""

    reason = "rejected"
    retry_after: float | None = None

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class AuthenticationFailed(Rejected):
    status_code = 401
    error_type = "authentication_error"
    reason = "unauthenticated"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_api_key")

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class PermissionDenied(Rejected):
    status_code = 403
    error_type = "permission_error"
    reason = "forbidden"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="insufficient_scope")


class QuotaExceeded(Rejected):
    """A key's quota (or concurrency) cannot pay for even one sample now; `code` names the limit."""

    status_code = 429
    error_type = "rate_limit_exceeded"
    reason = "quota"

    def __init__(self, message: str, limit: str, retry_after: float) -> None:
        super().__init__(message, code=limit)
        self.retry_after = retry_after


class Overloaded(QuotaExceeded):
    """The replica's admission queue is full, or a call waited too long to be admitted."""

    reason = "admission"
