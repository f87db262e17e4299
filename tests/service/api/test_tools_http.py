"""Tool calling passes through vLLM's tool-call parser when the operator names one (TTC_TOOL_CALL_PARSER)."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from loadtests.harness import stop
from tests.conftest import start_service

pytestmark = pytest.mark.engine

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
# SmolLM2 was not trained to call tools, so the test makes it write a Hermes-style call through guided decoding;
# what is tested is the service's part: tools in the prompt, vLLM's parser over the output, OpenAI's shape.
CALL = r'<tool_call>\n\{"name": "add", "arguments": \{"a": 2, "b": 3\}\}\n</tool_call>'


@pytest.fixture(scope="module")
def tool_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, process = start_service(
        tmp_path_factory.mktemp("tools"), env={"TTC_TOOL_CALL_PARSER": "hermes", "TTC_WARMUP": "false"}
    )
    yield url
    stop(process)


def test_tool_calls_come_back_parsed(tool_service: str) -> None:
    client = OpenAI(base_url=f"{tool_service}/v1", api_key="unused", max_retries=0)
    response = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "What is 2 + 3? Use the add tool."}],
        tools=[ADD],  # type: ignore[list-item]
        max_tokens=60,
        temperature=0,
        extra_body={"structured_outputs": {"regex": CALL}},
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and calls[0].function.name == "add"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"a": 2, "b": 3}  # type: ignore[union-attr]
    # the round trip: the call and its result go back into the conversation
    follow_up = httpx.post(
        f"{tool_service}/v1/chat/completions",
        json={
            "messages": [
                {"role": "user", "content": "What is 2 + 3? Use the add tool."},
                {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
                {"role": "tool", "tool_call_id": calls[0].id, "content": "5"},
            ],
            "tools": [ADD],
            "max_tokens": 8,
        },
        timeout=120,
    )
    assert follow_up.status_code == 200, follow_up.text


def test_tools_with_stream_or_a_forced_choice_are_refused(tool_service: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [ADD], "max_tokens": 4}
    for extra, param in (({"stream": True}, "stream"), ({"tool_choice": "required"}, "tool_choice")):
        response = httpx.post(f"{tool_service}/v1/chat/completions", json={**body, **extra}, timeout=60)
        assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_an_unknown_tool_parser_stops_the_service_at_start(tmp_path: Path) -> None:
    from service.runtime.settings import Settings

    with pytest.raises(ValueError, match="not one of vLLM's tool parsers"):
        Settings(tool_call_parser="no-such-parser")
