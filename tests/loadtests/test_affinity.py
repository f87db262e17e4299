"""The affinity benchmark's workload (no engine): a mix of tree searches and revisions, each body a valid
/v1/solve request, so a run measures routing and not request errors."""

from __future__ import annotations

from loadtests.affinity import problems
from service.api.protocol import SolveRequest


def test_the_workload_mixes_searches_and_revisions_as_valid_requests() -> None:
    bodies = problems(8)
    assert [body["strategy"] for body in bodies] == ["beam_search", "revision"] * 4
    for body in bodies:
        request = SolveRequest.model_validate(body)
        assert request.budget is not None and request.budget.seconds
    assert len({body["prompt"] for body in bodies}) == 8
