"""Pure logic of issue 11 (no engine): request validation, structured-output mapping, JSON voting, OpenAPI."""

import json
from typing import Any

import pytest
from pydantic import ValidationError

from service.api.app import create_app
from service.api.openai_serving import structured_output
from service.api.protocol import ChatCompletionRequest, CompletionRequest, SolveRequest, TTCOptions
from service.api.solver import answer_spec, parsed_winner
from service.runtime.engine import SamplingSpec, StructuredOutput
from service.runtime.settings import Settings
from strategies.base import Candidate, Result
from verifiers.answers import AnswerSpec, canonical_json, extract_answer

MESSAGES = [{"role": "user", "content": "hi"}]


def test_lone_surrogates_are_refused_with_their_field() -> None:
    raw = '{"messages":[{"role":"user","content":"a"}],"stop":["ok","\\ud800"]}'
    with pytest.raises(ValidationError, match=r"stop\.1 contains a lone UTF-16 surrogate"):
        ChatCompletionRequest.model_validate(json.loads(raw))
    with pytest.raises(ValidationError, match="surrogate"):
        SolveRequest.model_validate(json.loads('{"prompt":"\\udfff"}'))
    assert ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "ok \U0001f600"}]})


@pytest.mark.parametrize(
    "body",
    [
        {"stream_options": {"include_usage": True}},
        {"top_logprobs": 3},
        {"response_format": {"type": "json_schema"}},
        {"structured_outputs": {"regex": "a", "choice": ["a"]}},
        {"structured_outputs": {}},
        {"structured_outputs": {"regex": "("}},
        {"logit_bias": {"x": 1}},
        {"logit_bias": {"5": 101}},
    ],
)
def test_chat_rules(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": MESSAGES, **body})


def test_unknown_fields_are_kept_aside_not_refused() -> None:
    request = ChatCompletionRequest.model_validate({"messages": MESSAGES, "brand_new": 1})
    assert request.model_extra == {"brand_new": 1}
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"prompt": "x", "best_of": 2})
    with pytest.raises(ValidationError):
        SolveRequest.model_validate({"prompt": "x", "messages": None})


def test_response_format_and_structured_outputs_map_to_one_constraint() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = ChatCompletionRequest.model_validate(
        {
            "messages": MESSAGES,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        }
    )
    mapped = structured_output(chat)
    assert mapped is not None and mapped.is_json and mapped.as_dict() == {"json": schema}
    choice = structured_output(
        CompletionRequest.model_validate({"prompt": "x", "structured_outputs": {"choice": ["a", "b"]}})
    )
    assert choice == StructuredOutput(choice=("a", "b")) and not choice.is_json
    spec = SamplingSpec(top_k=-1, repetition_penalty=1.0, min_tokens=3, bad_words=("x",))
    assert spec.engine_extras() == {"min_tokens": 3, "bad_words": ["x"]}


def test_json_answers_vote_canonically_and_unparsed_never_win() -> None:
    assert (
        canonical_json('{"b": 1,  "a": [1, 2]}') == canonical_json('{"a":[1,2],"b":1}') == '{"a":[1,2],"b":1}'
    )
    assert extract_answer('{"a": 1', AnswerSpec("json")) is None
    spec = SamplingSpec(structured=StructuredOutput(json_object=True))
    assert answer_spec(TTCOptions(), spec).type == "json"
    assert answer_spec(TTCOptions.model_validate({"answer": {"type": "text"}}), spec).type == "text"
    broken = Candidate('{"a": 1', None, score=0.9)
    fine = Candidate('{"a": 2}', '{"a":2}', score=0.1)
    result = Result(broken.text, None, [broken, fine], {"selection": "max"})
    chosen = parsed_winner(result, AnswerSpec("json"))
    assert chosen.text == fine.text and chosen.answer == fine.answer


def test_openapi_documents_real_errors_and_no_422() -> None:
    document = create_app(Settings()).openapi()
    assert "ErrorResponse" in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
            if path.startswith("/v1/") and method == "post":
                for code in ("400", "413", "503"):
                    assert code in operation["responses"], (method, path, code)
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert chat["application/json"]["schema"]["$ref"] == "#/components/schemas/ChatCompletionResponse"
    assert "text/event-stream" in chat
    solve = document["components"]["schemas"]["SolveRequest"]
    assert solve["oneOf"] == [{"required": ["messages"]}, {"required": ["prompt"]}]


def test_a_chat_requests_sampling_fields_it_set_are_known_to_the_solver() -> None:
    """The strategy's own sampling defaults fill what the client left unset (issue 12), on the OpenAI path too."""
    from service.api.openai_serving import sampling_given

    assert sampling_given(ChatCompletionRequest.model_validate({"messages": MESSAGES})) == frozenset()
    body = ChatCompletionRequest.model_validate(
        {"messages": MESSAGES, "temperature": 0.5, "max_completion_tokens": 9, "stop": ["x"], "seed": 1}
    )
    assert sampling_given(body) == {"temperature", "max_tokens", "stop", "seed"}
    text = CompletionRequest.model_validate({"prompt": "hi", "max_tokens": 5, "top_p": 0.9})
    assert sampling_given(text) == {"max_tokens", "top_p"}
