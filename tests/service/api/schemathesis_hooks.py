"""Schemathesis hooks for tests/service/api/test_openapi_conformance.py: keep every schema-valid request cheap.

The schema allows n = 128 samples of 32k tokens, or a calibration over 500 questions; run as generated, a few such
cases take the 2-core engine for hours. Positive cases are therefore scaled down within their schema (integers to
at most 16, lists to at most 3 items, a 16-token default for completions, a 128-token budget for /v1/solve,
small timing calls for the engine calibration), so
they stay schema-valid while every call takes seconds. Negative cases are sent exactly as generated: the service
rejects them before any work.
"""

from typing import Any

import schemathesis

INT_CAP = 16
LIST_CAP = 3


def _scaled(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return min(value, INT_CAP)
    if isinstance(value, float):
        return min(value, 30.0)
    if isinstance(value, list):
        return [_scaled(item) for item in value[:LIST_CAP]]
    if isinstance(value, dict):
        return {key: _scaled(item) for key, item in value.items()}
    return value


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if (
        case.meta is None
        or str(case.meta.generation.mode.value) != "positive"
        or not isinstance(case.body, dict)
    ):
        return case
    body = _scaled(case.body)
    path = case.operation.path
    no_limit = body.get("max_tokens") is None and body.get("max_completion_tokens") is None
    if path in ("/v1/chat/completions", "/v1/completions") and no_limit:
        body["max_tokens"] = 16
    if path == "/v1/solve" and not isinstance(body.get("budget"), dict):
        body["budget"] = {"tokens": 128}
    if path == "/v1/allocator/calibrate-engine":  # its defaults time 6 calls of up to 16 x 64 tokens
        body.setdefault("batch_sizes", [1, 2])
        body.setdefault("max_tokens", [4])
    case.body = body
    return case
