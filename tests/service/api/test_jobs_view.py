"""The public job object from a stored record (pure logic)."""

from __future__ import annotations

import json

from service.api.jobs import view


def test_a_stored_run_record_with_float_dust_below_zero_reads_as_zero() -> None:
    """Records written before the meter clamped its float dust (-1.2e-4 eFLOPs reserved) stay in Redis for a
    day; showing such a job (or a list holding it) was a 500."""
    record = {
        "id": "job-1",
        "kind": "solve",
        "status": "succeeded",
        "created_at": "1.0",
        "attempts": "1",
        "spent_1": json.dumps(
            {
                "completion_tokens": 12,
                "eflops": 3.0,
                "reserved_tokens": 0,
                "reserved_eflops": -0.0001220703125,
            }
        ),
    }
    usage = view(record).usage
    assert usage.attempts == 1
    assert [(run.attempt, run.completion_tokens, run.reserved_eflops) for run in usage.per_attempt] == [
        (1, 12, 0.0)
    ]
