"""Our exceptions. service/api/errors.py is the one place that turns them (and any other exception) into an
OpenAI-style error response.

ServiceError                 500 internal_error
├── InvalidRequest           400 invalid_request_error (names the offending `param`)
├── NotFound                 404 not_found_error
├── BudgetExhausted          400 budget_exhausted (the budget cannot pay for even one sample)
├── EngineUnavailable        503 engine_unavailable (starting, dead, or timed out)
│   └── EngineLost           503 engine_unavailable (one of several engines died under a call: redo it)
└── StorageUnavailable       503 storage_unavailable (Redis did not answer)
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(ServiceError):
    status_code = 400
    error_type = "invalid_request_error"


class NotFound(ServiceError):
    status_code = 404
    error_type = "not_found_error"


class BudgetExhausted(ServiceError):
    status_code = 400
    error_type = "budget_exhausted"


class EngineUnavailable(ServiceError):
    status_code = 503
    error_type = "engine_unavailable"


class EngineLost(EngineUnavailable):
    """An engine died while a call ran on it and another engine can take the call; `generate` redoes it."""


class StorageUnavailable(ServiceError):
    """Redis, where corpora and calibrations live, did not answer."""

    status_code = 503
    error_type = "storage_unavailable"
