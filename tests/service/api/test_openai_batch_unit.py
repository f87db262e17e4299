"""OpenAI batch files without an engine: line parsing and the mapping of a request line to a batch problem."""

import json

import pytest

from service.api.openai_batch import STATUS, batch_view, parse_lines, problem_of, requests_of
from service.api.protocol import ChatCompletionRequest
from service.runtime.errors import InvalidRequest

ENDPOINT = "/v1/chat/completions"


def line(custom_id: str, body: dict[str, object], url: str = ENDPOINT) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def test_lines_become_batch_problems_with_their_sampling_and_ttc_options() -> None:
    body = {
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "max_completion_tokens": 32,
        "temperature": 0.5,
        "seed": 3,
        "stop": "\n\n",
        "ttc": {"verifier": {"name": "judge"}, "answer": {"type": "number"}, "params": {"family": "math"}},
    }
    lines = parse_lines(
        (line("a", body) + "\n\n" + line("b", {"messages": body["messages"]})).encode(), ENDPOINT
    )
    assert [custom_id for custom_id, _ in lines] == ["a", "b"]
    (first_id, first), (second_id, second) = requests_of(lines)
    problem = problem_of(first_id, first, 1)
    assert problem.id == "a" and problem.sampling.max_tokens == 32 and problem.sampling.temperature == 0.5
    assert problem.sampling.seed == 3 and problem.sampling.stop == ["\n\n"]
    assert (
        problem.verifier is not None
        and problem.verifier.name == "judge"
        and problem.params == {"family": "math"}
    )
    plain = problem_of(second_id, second, 2)
    assert plain.sampling.max_tokens == 256 and plain.sampling.temperature == 0.8 and plain.verifier is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "no requests"),
        ("{not json", "line 1"),
        (line("a", {"messages": []}) + "\n" + line("a", {"messages": []}), "custom_id"),
        (line("a", {"messages": []}, url="/v1/completions"), ENDPOINT),
        (json.dumps({"custom_id": "a", "url": ENDPOINT}), "body"),
    ],
)
def test_bad_files_are_400s_that_say_where(content: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_lines(content.encode(), ENDPOINT)
    assert words in refused.value.message and refused.value.param == "input_file_id"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"ttc": {"budget": {"tokens": 9}}}, "no budget of its own"),
        ({"ttc": {"strategy": "best_of_n"}}, "auto"),
        ({"n": 2}, "n must be 1"),
    ],
)
def test_a_line_cannot_bring_its_own_budget_strategy_or_n(extra: dict[str, object], words: str) -> None:
    request = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "Hi"}], **extra})
    with pytest.raises(InvalidRequest) as refused:
        problem_of("a", request, 4)
    assert words in refused.value.message and "line 4" in refused.value.message


def test_a_job_shows_as_an_openai_batch() -> None:
    job = {
        "id": "job-1",
        "status": "succeeded",
        "created_at": "10.5",
        "started_at": "11",
        "finished_at": "20",
        "ttl": "100",
        "request": {
            "batch": {
                "input_file_id": "file-1",
                "endpoint": ENDPOINT,
                "completion_window": "24h",
                "metadata": {"a": "b"},
            },
            "lines": [["x", {}], ["y", {}]],
            "budget": {"tokens": 50},
        },
        "result": {"output_file_id": "file-2", "usage": {"eflops": 1.0}, "summary": {"problems": 2}},
    }
    batch = batch_view(job)
    assert batch.status == "completed" and batch.output_file_id == "file-2" and batch.completed_at == 20
    assert batch.request_counts.total == 2 and batch.request_counts.completed == 2
    assert (
        batch.metadata == {"a": "b"}
        and batch.expires_at == 120
        and batch.ttc == {"budget": {"tokens": 50}, "summary": {"problems": 2}}
    )
    assert set(STATUS) == {"queued", "running", "succeeded", "failed", "cancelled"}
