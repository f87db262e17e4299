"""Tool calling through vLLM's own tool-call parsers (the `--tool-call-parser` of vLLM's server), for either
engine: the tools go into the chat template, and the finished text is parsed by the parser the operator named
in TTC_TOOL_CALL_PARSER. Without that setting, a request with `tools` is a 400 (see service/api)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.runtime.errors import InvalidRequest


@dataclass(frozen=True)
class ParsedToolCalls:
    content: str | None
    tool_calls: list[dict[str, Any]]


def check_parser(name: str) -> None:
    """A 400-free start: an unknown parser name is refused when the service starts, not per request."""
    from vllm.tool_parsers import ToolParserManager

    if name not in ToolParserManager.list_registered():
        raise ValueError(
            f"TTC_TOOL_CALL_PARSER={name!r} is not one of vLLM's tool parsers: "
            f"{', '.join(ToolParserManager.list_registered())}"
        )


def parse_tool_calls(
    parser_name: str,
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    tools: list[dict[str, Any]],
    tool_choice: Any,
    text: str,
) -> ParsedToolCalls:
    """vLLM's parser over one finished completion: the tool calls it found (OpenAI's shape) and the rest."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    try:
        request = ChatCompletionRequest(
            messages=list(messages), tools=tools, tool_choice=tool_choice or "auto"
        )
    except ValueError as exc:
        raise InvalidRequest(f"The tools are not valid: {exc}", param="tools") from exc
    parser = ToolParserManager.get_tool_parser(parser_name)(tokenizer, list(request.tools or []))
    extracted = parser.extract_tool_calls(text, request)
    if not extracted.tools_called:
        return ParsedToolCalls(text, [])
    calls = [call.model_dump(exclude_none=True) for call in extracted.tool_calls]
    return ParsedToolCalls(extracted.content or None, calls)
