"""Every OpenAI and vLLM parameter is honoured (its effect seen on the real engine) or refused by name (issue 11)."""

import json
import re
from functools import cache
from typing import Any

import httpx
import jsonschema
import pytest
from transformers import AutoTokenizer

from service.runtime.model_files import ensure_default_model
from service.runtime.settings import Settings
from tests.conftest import greedy_word

pytestmark = pytest.mark.engine

SUM = [{"role": "user", "content": "What is 2 + 3? Answer with just the number."}]
STORY = [{"role": "user", "content": "Write a short story about a cat named Tom."}]
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@cache
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(str(ensure_default_model(Settings().model_cache_dir)))


def chat(client: httpx.Client, messages: list[dict[str, str]], **options: Any) -> dict[str, Any]:
    response = client.post("/v1/chat/completions", json={"messages": messages, "temperature": 0, **options})
    assert response.status_code == 200, response.text
    return dict(response.json())


def text_of(payload: dict[str, Any]) -> str:
    return str(payload["choices"][0]["message"]["content"])


def test_logit_bias_changes_greedy_output(client: httpx.Client) -> None:
    baseline = text_of(chat(client, SUM, max_tokens=8))
    token = tokenizer().encode(" banana", add_special_tokens=False)[0]
    biased = text_of(chat(client, SUM, max_tokens=8, logit_bias={str(token): 100}))
    assert biased != baseline
    assert tokenizer().decode([token]).strip() in biased


def test_min_tokens_lengthens_and_ignore_eos_reaches_max_tokens(client: httpx.Client) -> None:
    short = chat(client, SUM, max_tokens=40)
    assert short["usage"]["completion_tokens"] < 12 and short["choices"][0]["finish_reason"] == "stop"
    longer = chat(client, SUM, max_tokens=40, min_tokens=12)
    assert longer["usage"]["completion_tokens"] >= 12
    forced = chat(client, SUM, max_tokens=24, ignore_eos=True)
    assert forced["usage"]["completion_tokens"] == 24 and forced["choices"][0]["finish_reason"] == "length"


def test_penalties_change_greedy_output(client: httpx.Client) -> None:
    baseline = text_of(chat(client, STORY, max_tokens=48))
    for option in ({"repetition_penalty": 1.8}, {"presence_penalty": 2.0}, {"frequency_penalty": 2.0}):
        assert text_of(chat(client, STORY, max_tokens=48, **option)) != baseline, option


def test_top_k_1_and_min_p_1_sample_greedily(client: httpx.Client) -> None:
    greedy = text_of(chat(client, STORY, max_tokens=16))
    for option in ({"top_k": 1}, {"min_p": 1.0}):
        texts = {
            text_of(chat(client, STORY, max_tokens=16, temperature=1.0, seed=seed, **option))
            for seed in (1, 2)
        }
        assert texts == {greedy}, option
    sampled = {text_of(chat(client, STORY, max_tokens=16, temperature=1.0, seed=seed)) for seed in (1, 2)}
    assert sampled != {greedy}  # the check above is not vacuous: without them, sampling differs


def test_stop_token_ids_bad_words_and_allowed_token_ids(client: httpx.Client) -> None:
    baseline = chat(client, CAPITAL, max_tokens=16)
    word = greedy_word(text_of(baseline))
    ids = tokenizer().encode(text_of(baseline), add_special_tokens=False)
    stopped = chat(client, CAPITAL, max_tokens=16, stop_token_ids=[ids[2]])
    assert stopped["usage"]["completion_tokens"] <= 3 and stopped["choices"][0]["finish_reason"] == "stop"
    assert word not in text_of(chat(client, CAPITAL, max_tokens=16, bad_words=[word, f" {word}"]))
    allowed = tokenizer().encode(" yes no", add_special_tokens=False)
    only = chat(client, CAPITAL, max_tokens=6, allowed_token_ids=allowed)
    assert set(tokenizer().encode(text_of(only), add_special_tokens=False)) <= set(allowed)


def test_completion_echo_and_logprobs(client: httpx.Client) -> None:
    body = {
        "prompt": "The capital of France is",
        "max_tokens": 4,
        "echo": True,
        "logprobs": 2,
        "temperature": 0,
    }
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["text"].startswith("The capital of France is") and len(choice["text"]) > len(body["prompt"])
    assert len(choice["logprobs"]["top_logprobs"][0]) == 2


def test_response_format_json_schema_output_parses_and_validates(client: httpx.Client) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}
    messages = [{"role": "user", "content": "Describe a person as JSON with a name and an age."}]
    payload = chat(client, messages, max_tokens=60, response_format=fmt)
    jsonschema.validate(json.loads(text_of(payload)), PERSON_SCHEMA)
    plain = json.loads(
        text_of(chat(client, messages, max_tokens=60, response_format={"type": "json_object"}))
    )
    assert isinstance(plain, dict)


def test_structured_outputs_choice_and_regex(client: httpx.Client) -> None:
    choice = text_of(chat(client, CAPITAL, max_tokens=8, structured_outputs={"choice": ["Lyon", "Nice"]}))
    assert choice in {"Lyon", "Nice"}
    code = text_of(chat(client, CAPITAL, max_tokens=8, structured_outputs={"regex": "[0-9]{3}-[a-z]{2}"}))
    assert re.fullmatch("[0-9]{3}-[a-z]{2}", code)
    response = client.post(
        "/v1/completions",
        json={"prompt": "Pick a colour:", "max_tokens": 8, "structured_outputs": {"choice": ["red", "blue"]}},
    )
    assert response.status_code == 200 and response.json()["choices"][0]["text"] in {"red", "blue"}


@pytest.mark.parametrize(
    ("ttc", "label"),
    [
        ({"strategy": "best_of_n", "params": {"n": 4}, "return_candidates": True}, "best_of_n"),
        (
            {
                "strategy": "beam_search",
                "verifier": {"name": "calculator"},
                "params": {"width": 2, "beam_width": 2, "max_depth": 2},
                "return_candidates": True,
            },
            "tree",
        ),
    ],
)
def test_json_schema_constrains_every_sample_of_a_strategy(
    client: httpx.Client, ttc: dict[str, Any], label: str
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}
    body = {
        "messages": [{"role": "user", "content": "Describe a person as JSON with a name and an age."}],
        "max_tokens": 60,
        "temperature": 1.0,
        "response_format": fmt,
        "ttc": {**ttc, "budget": {"tokens": 2000}},
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    chosen = json.loads(text_of(payload))
    jsonschema.validate(chosen, PERSON_SCHEMA)
    assert payload["ttc"]["answer"] == json.dumps(
        chosen, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    finished = [c for c in payload["ttc"]["candidates"] if c["finish_reason"] == "stop"]
    assert finished, label
    for candidate in finished:  # every sample that was not cut off satisfies the schema
        jsonschema.validate(json.loads(candidate["text"]), PERSON_SCHEMA)


REFUSED: list[tuple[str, str, dict[str, Any]]] = [
    ("/v1/chat/completions", "audio", {"audio": {"voice": "alloy", "format": "mp3"}}),
    ("/v1/chat/completions", "modalities", {"modalities": ["text", "audio"]}),
    ("/v1/chat/completions", "web_search_options", {"web_search_options": {}}),
    ("/v1/chat/completions", "prediction", {"prediction": {"type": "content", "content": "x"}}),
    ("/v1/chat/completions", "tools", {"tools": [{"type": "function", "function": {"name": "f"}}]}),
    ("/v1/chat/completions", "functions", {"functions": [{"name": "f"}]}),
    ("/v1/chat/completions", "top_logprobs", {"top_logprobs": 2}),
    ("/v1/chat/completions", "stream_options", {"stream_options": {"include_usage": True}}),
    ("/v1/chat/completions", "response_format", {"response_format": {"type": "json_schema"}}),
    ("/v1/chat/completions", "structured_outputs", {"structured_outputs": {"regex": "a", "choice": ["a"]}}),
    ("/v1/chat/completions", "min_tokens", {"max_tokens": 4, "min_tokens": 8}),
    ("/v1/chat/completions", "logit_bias", {"logit_bias": {"not-a-token": 5}}),
    ("/v1/completions", "suffix", {"suffix": "world"}),
    ("/v1/completions", "best_of", {"best_of": 3}),
    ("/v1/completions", "stream_options", {"stream_options": {"include_usage": True}}),
]


@pytest.mark.parametrize(
    ("path", "name", "extra"), REFUSED, ids=[f"{p.split('/')[-1]}-{n}" for p, n, _ in REFUSED]
)
def test_unsupported_parameters_are_a_400_naming_them(
    client: httpx.Client, path: str, name: str, extra: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"max_tokens": 4, **extra}
    body.update({"prompt": "Hello"} if path == "/v1/completions" else {"messages": SUM})
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert name in (error["param"] or "") or name in error["message"], error


def test_tools_with_ttc_are_refused_with_a_reason(client: httpx.Client) -> None:
    body = {
        "messages": SUM,
        "tools": [{"type": "function", "function": {"name": "add"}}],
        "ttc": {"strategy": "best_of_n"},
    }
    error = client.post("/v1/chat/completions", json=body).json()["error"]
    assert error["param"] == "tools" and "ttc" in error["message"]


def test_bookkeeping_and_unknown_fields_are_accepted(client: httpx.Client) -> None:
    extra = {
        "user": "u-1",
        "metadata": {"team": "a"},
        "store": False,
        "service_tier": "auto",
        "reasoning_effort": "low",
        "some_future_field": {"x": 1},
    }
    assert chat(client, SUM, max_tokens=2, **extra)["choices"]
