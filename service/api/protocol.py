"""Every request and response model of the HTTP API.

OpenAI's fields come first, in OpenAI's order, then ours; bounds live in the types, so a bad value is a 400
before any work starts.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from strategies import STRATEGIES
from verifiers import VERIFIER_NAMES

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------


def _lone_surrogate_at(value: Any, path: str) -> str | None:
    """The dotted path of the first string holding a lone UTF-16 surrogate (JSON allows "\\ud800"; UTF-8 and
    the tokenizer do not), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and (found := _lone_surrogate_at(key, path)):
            return found
        if found := _lone_surrogate_at(item, f"{path}.{key}" if path else str(key)):
            return found
    return None


class Strict(BaseModel):
    """Request-side models take JSON types as they are: "2" is not an integer and 0 is not false, as in OpenAI's
    API and as the OpenAPI document says (only an integer may stand for a number)."""

    model_config = ConfigDict(strict=True)


class RequestBody(Strict):
    """A request body: text must be valid Unicode, so a lone surrogate is a 400 naming the field, never an
    engine or tokenizer failure later."""

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        if (where := _lone_surrogate_at(data, "")) is not None:
            raise ValueError(f"{where} contains a lone UTF-16 surrogate, which is not valid Unicode text")
        return data


class TextContentPart(Strict):
    type: Literal["text"] = Field(..., description="Only text parts are supported.")
    text: str = Field(..., description="The text.")


class ChatMessage(Strict):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(..., description="Who speaks.")
    content: str | list[TextContentPart] | None = Field(None, description="What is said.")
    name: str | None = Field(None, description="Optional speaker name.")
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description="An assistant's earlier tool calls (rendered by the chat template)."
    )
    tool_call_id: str | None = Field(None, description="For role `tool`: the call this message answers.")

    def template_dict(self) -> dict[str, Any]:
        """The message as the chat template takes it."""
        message: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.tool_calls is not None:
            message["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class BudgetSpec(Strict):
    """Hard caps on what one request may spend; give any subset."""

    model_config = ConfigDict(extra="forbid")

    tokens: int | None = Field(
        None, ge=1, le=1_000_000, description="Completion tokens, all samples and verifier calls included."
    )
    eflops: float | None = Field(
        None, gt=0, le=1e24, description="Equivalent FLOPs (Kinetics: compute + intensity x memory bytes)."
    )
    seconds: float | None = Field(
        None, gt=0, le=3600, description="Wall-clock seconds; in-flight work is aborted at the cap."
    )
    context_tokens: int | None = Field(
        None, ge=1, le=100_000_000, description="Input tokens summed over every engine call (RAG's budget)."
    )


class VerifierSpec(Strict):
    """A verifier by name plus its options (e.g. `{"name": "reference", "answer": "42"}`)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        ...,
        min_length=1,
        max_length=64,
        description="Verifier name, see GET /v1/verifiers.",
        json_schema_extra={"enum": list(VERIFIER_NAMES)},
    )

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SamplingOptions(Strict):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.8, ge=0, le=2, description="Sampling temperature of every sample.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, le=32768, description="Longest single sample, in tokens.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Seed for reproducible sampling.")
    stop: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, max_length=8, description="Stop strings."
    )


class AnswerOptions(Strict):
    model_config = ConfigDict(extra="forbid")

    type: Literal["number", "boxed", "text", "regex", "json"] = Field(
        "number",
        description="How the final answer is read out of a candidate; `json` (the default with a JSON "
        "response_format) compares parsed JSON in canonical form.",
    )
    pattern: str | None = Field(
        None, max_length=1000, description="For `regex`: group 1 (or the match) is the answer."
    )

    @model_validator(mode="after")
    def _pattern_for_regex(self) -> AnswerOptions:
        if self.type == "regex":
            import regex  # the module the pattern runs in (with a time limit: verifiers/answers.py)

            if not self.pattern:
                raise ValueError("answer.pattern is required when answer.type is 'regex'")
            try:
                regex.compile(self.pattern)
            except regex.error as exc:
                raise ValueError(f"answer.pattern is not a valid regular expression: {exc}") from exc
        return self


class RagOptions(Strict):
    """Retrieval for the `rag`, `drag` and `iterdrag` strategies (issue 4); unset k/demos/iterations are
    chosen for the budget by the allocation model."""

    model_config = ConfigDict(extra="forbid")

    corpus: str = Field(..., min_length=1, max_length=64, description="Corpus to retrieve from.")
    k: int | None = Field(None, ge=0, le=50, description="Documents retrieved per query.")
    demos: int | None = Field(
        None, ge=0, le=16, description="In-context demonstrations (each with k documents)."
    )
    iterations: int | None = Field(
        None, ge=0, le=5, description="IterDRAG follow-up rounds (0 = DRAG, one call)."
    )


class TTCOptions(Strict):
    """Test-time compute options: the body of `ttc` in the OpenAI endpoints, and part of /v1/solve."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(
        "auto",
        min_length=1,
        max_length=64,
        description="Strategy name, see GET /v1/strategies; `auto` chooses one per prompt within the budget.",
        json_schema_extra={"enum": [*sorted(STRATEGIES)]},
    )
    budget: BudgetSpec | None = Field(None, description="Hard caps; the service spends up to them.")
    verifier: VerifierSpec | None = Field(None, description="Verifier that scores candidates.")
    params: dict[str, Any] = Field(default_factory=dict, description="Strategy options (e.g. n, selection).")
    answer: AnswerOptions = Field(default_factory=AnswerOptions, description="How final answers are read.")
    return_candidates: bool = Field(False, description="Include every candidate in the response.")
    rag: RagOptions | None = Field(None, description="Retrieval options for the RAG strategies.")
    # -- background jobs (issue 13) --
    background: bool = Field(
        False,
        description="Run as a background job: 202 with the job at once; GET /v1/jobs/{id} for the result.",
    )


# ---------------------------------------------------------------------------------------------------------
# /v1/solve
# ---------------------------------------------------------------------------------------------------------


class PromptOrMessages(RequestBody):
    """A body that takes exactly one of `messages` and `prompt` (its subclass declares both fields), neither
    of them null: /v1/solve and each problem of /v1/solve/batch."""

    @model_validator(mode="before")
    @classmethod
    def _no_null_input(cls, data: Any) -> Any:
        for key in ("messages", "prompt"):
            if isinstance(data, dict) and key in data and data[key] is None:
                raise ValueError(f"`{key}` must not be null: leave it out and give the other one")
        return data

    @model_validator(mode="after")
    def _one_input(self) -> PromptOrMessages:
        if (getattr(self, "messages", None) is None) == (getattr(self, "prompt", None) is None):
            raise ValueError("give exactly one of `messages` and `prompt`")
        return self


class SolveRequest(TTCOptions, PromptOrMessages):
    # Exactly one of `messages` and `prompt`, said in the schema too; leaving one out is how to not give it
    # (an explicit null is refused, so the schema and the code agree).
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["messages"]}, {"required": ["prompt"]}]}
    )

    model: str | None = Field(None, description="Served model name; optional (there is one model).")
    messages: list[ChatMessage] | SkipJsonSchema[None] = Field(
        None, min_length=1, max_length=1024, description="The conversation (OpenAI format); or give `prompt`."
    )
    prompt: str | SkipJsonSchema[None] = Field(
        None, min_length=1, description="A raw question, sent through the chat template; or give `messages`."
    )
    sampling: SamplingOptions = Field(
        default_factory=SamplingOptions, description="Sampling of each candidate."
    )
    stream: bool = Field(False, description="Send server-sent progress events, then the result.")

    @model_validator(mode="after")
    def _background_or_stream(self) -> SolveRequest:
        if self.background and self.stream:
            raise ValueError("`background` and `stream` exclude each other: stream GET /v1/jobs/{id}/events")
        return self


class CandidateOut(BaseModel):
    text: str = Field(..., description="The candidate's full text.")
    answer: str | None = Field(..., description="Its extracted final answer.")
    score: float | None = Field(..., description="Verifier score in [0, 1], if a verifier ran.")
    votes: int = Field(..., description="Candidates that gave the same answer.")
    tokens: int = Field(..., description="Completion tokens of this candidate.")
    finish_reason: str | None = Field(..., description="stop, length or abort.")


class Usage(BaseModel):
    prompt_tokens: int = Field(..., description="Prompt tokens over every engine call.")
    completion_tokens: int = Field(..., description="Generated tokens, samples and verifier calls included.")
    total_tokens: int = Field(..., description="prompt_tokens + completion_tokens.")
    cached_prompt_tokens: int = Field(
        ..., description="Prompt tokens the engine served from its prefix cache."
    )
    engine_requests: int = Field(..., description="Engine calls made for samples.")
    verifier_requests: int = Field(..., description="Engine calls made by the verifier.")
    reward_model_tokens: int = Field(
        0,
        description="Tokens a reward-model verifier read on its own server (another model: not in "
        "prompt_tokens, eflops or the budget's caps).",
    )
    eflops: float = Field(..., description="Equivalent FLOPs spent (Kinetics cost model).")
    peak_kv_tokens: int = Field(..., description="Most distinct tokens the request held in KV cache at once.")
    seconds: float = Field(..., description="Wall-clock seconds of the request.")
    engine_restarts: int = Field(
        0, description="Engine calls redone on another engine because theirs died mid-call (several engines)."
    )
    engine_requests_stopped: int = Field(
        0,
        description="Engine calls the strategy aborted in the engine while they ran (deepconf's low-confidence "
        "traces); their tokens so far are in completion_tokens.",
    )


class BudgetReport(BaseModel):
    requested: BudgetSpec = Field(..., description="The caps in force (the default when none was given).")
    spent: BudgetSpec = Field(..., description="What was spent on each capped axis.")


class SolveResponse(BaseModel):
    id: str = Field(..., description="Request id.")
    object: Literal["ttc.solve"] = "ttc.solve"
    created: int = Field(..., description="Unix time.")
    model: str = Field(..., description="Served model.")
    answer: str | None = Field(..., description="The chosen final answer, null when abstaining.")
    text: str = Field(..., description="The chosen candidate's text.")
    strategy: str = Field(..., description="Strategy that ran.")
    params: dict[str, Any] = Field(..., description="Strategy parameters as actually used.")
    abstained: bool = Field(..., description="True when the service declined to answer.")
    candidates: list[CandidateOut] | None = Field(None, description="Every candidate, when asked for.")
    usage: Usage = Field(..., description="What the request spent.")
    budget: BudgetReport = Field(..., description="Caps and spend side by side.")
    details: dict[str, Any] = Field(default_factory=dict, description="Strategy-specific information.")


# ---------------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints
# ---------------------------------------------------------------------------------------------------------


class StreamOptions(Strict):
    include_usage: bool = Field(False, description="Send a last chunk with usage.")


class JsonSchemaFormat(Strict):
    name: str = Field("response", max_length=64, description="The schema's name (not used for decoding).")
    description: str | None = Field(None, description="What the schema is for (not used for decoding).")
    schema_: dict[str, Any] = Field(
        default_factory=dict, alias="schema", description="A JSON Schema every sample must satisfy."
    )
    strict: bool | None = Field(None, description="Accepted; decoding is always constrained to the schema.")

    model_config = ConfigDict(populate_by_name=True)


class ResponseFormat(Strict):
    """OpenAI's `response_format`: vLLM's guided decoding constrains every sample (every strategy's too)."""

    type: Literal["text", "json_object", "json_schema"] = Field(..., description="Output format.")
    json_schema: JsonSchemaFormat | None = Field(None, description="Required when type is json_schema.")

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError(
                "When response_format type is 'json_schema', the 'json_schema' field must be provided."
            )
        return self


class StructuredOutputs(Strict):
    """vLLM's `structured_outputs`: exactly one constraint, applied to every sample through guided decoding."""

    json_: dict[str, Any] | str | None = Field(
        None, alias="json", description="A JSON Schema (object or text)."
    )
    regex: str | None = Field(None, min_length=1, description="A regular expression the output must match.")
    choice: list[str] | None = Field(None, min_length=1, description="The output is exactly one of these.")
    grammar: str | None = Field(None, min_length=1, description="An EBNF (GBNF/Lark) grammar.")
    json_object: bool | None = Field(None, description="Any JSON object.")
    disable_any_whitespace: bool = Field(False, description="No whitespace between JSON tokens.")
    disable_additional_properties: bool = Field(
        False, description="additionalProperties false in the schema."
    )
    whitespace_pattern: str | None = Field(None, description="Whitespace allowed between JSON tokens.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        given = [
            name
            for name, value in (
                ("json", self.json_),
                ("regex", self.regex),
                ("choice", self.choice),
                ("grammar", self.grammar),
                ("json_object", self.json_object),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "structured_outputs takes exactly one constraint of json, regex, choice, grammar, json_object; "
                f"got {given or 'none'}"
            )
        if self.regex is not None:
            import re

            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(
                    f"structured_outputs.regex is not a valid regular expression: {exc}"
                ) from exc
        return self


LogitBias = dict[Annotated[str, Field(pattern=r"^\d{1,9}$")], Annotated[float, Field(ge=-100, le=100)]]
Stop = str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=8)] | None


class OpenAIRequest(RequestBody):
    """What the chat and text completion requests share: their validation rules, and vLLM's sampling extras.
    Unknown fields are ignored with a warning in the log, as vLLM does (so clients that send newer OpenAI
    fields keep working); the OpenAI fields we cannot honour are declared, so that they are refused by name."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _stream_options_need_stream(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("stream_options") and not data.get("stream"):
            raise ValueError("`stream_options` can only be defined when `stream=True`.")
        return data

    @model_validator(mode="after")
    def _warn_unknown(self) -> OpenAIRequest:
        if self.model_extra:
            logger.warning(
                "The following fields were present in the request but ignored: %s", sorted(self.model_extra)
            )
        return self


_VLLM_EXTRAS_NOTE = "vLLM extra, passed to the engine."


class ChatCompletionRequest(OpenAIRequest):
    model: str | None = Field(None, description="Served model name; another name is a 404 model_not_found.")
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=1024, description="The conversation.")
    audio: dict[str, Any] | None = Field(None, description="Refused (400): this model has no audio output.")
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2, description="Penalty on repeated tokens, by count."
    )
    function_call: str | dict[str, Any] | None = Field(None, description="Deprecated; refused like `tools`.")
    functions: list[dict[str, Any]] | None = Field(None, description="Deprecated; refused like `tools`.")
    logit_bias: LogitBias | None = Field(None, description="Token id (as a string) to a bias in [-100, 100].")
    logprobs: bool = Field(False, description="Return log probabilities of the output tokens.")
    max_completion_tokens: int | None = Field(None, ge=1, le=32768, description="Longest completion.")
    max_tokens: int | None = Field(None, ge=1, le=32768, description="Longest completion (deprecated name).")
    metadata: dict[str, str] | None = Field(None, description="Accepted; not applied (nothing is stored).")
    modalities: list[Literal["text"]] | None = Field(None, description='Only ["text"]; audio is refused.')
    n: int = Field(1, ge=1, le=128, description="Choices to return; with temperature 0 it must be 1.")
    parallel_tool_calls: bool | None = Field(None, description="Passed on with `tools` (tool parser only).")
    prediction: dict[str, Any] | None = Field(None, description="Refused (400): no predicted outputs.")
    presence_penalty: float | None = Field(
        None, ge=-2, le=2, description="Penalty on tokens already present."
    )
    reasoning_effort: str | None = Field(
        None, description="Accepted; not applied (the model does not reason)."
    )
    response_format: ResponseFormat | None = Field(None, description="text, json_object or json_schema.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Sampling seed.")
    service_tier: str | None = Field(None, description="Accepted; not applied (one tier).")
    stop: Stop = Field(None, description="Up to 8 stop strings.")
    store: bool | None = Field(None, description="Accepted; not applied (nothing is stored).")
    stream: bool = Field(False, description="Stream chunks as server-sent events.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options (only with stream).")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature.")
    tool_choice: str | dict[str, Any] | None = Field(None, description="With `tools` (tool parser only).")
    tools: list[dict[str, Any]] | None = Field(
        None,
        description="Tool definitions: passed to vLLM when TTC_TOOL_CALL_PARSER is set; otherwise a 400.",
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="Alternatives per token (needs logprobs)."
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    user: str | None = Field(None, description="Accepted; not applied (end-user id).")
    web_search_options: dict[str, Any] | None = Field(None, description="Refused (400): no web search.")
    top_k: int | None = Field(
        None, ge=-1, le=1_000_000, description="Top-k sampling (0 or -1: off). " + _VLLM_EXTRAS_NOTE
    )
    min_p: float | None = Field(None, ge=0, le=1, description="Min-p sampling. " + _VLLM_EXTRAS_NOTE)
    repetition_penalty: float | None = Field(None, gt=0, le=2, description="1 is off. " + _VLLM_EXTRAS_NOTE)
    min_tokens: int = Field(
        0, ge=0, le=32768, description="Tokens before EOS or a stop may end. " + _VLLM_EXTRAS_NOTE
    )
    ignore_eos: bool = Field(False, description="Keep generating past EOS. " + _VLLM_EXTRAS_NOTE)
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, max_length=64, description="Stop tokens. " + _VLLM_EXTRAS_NOTE
    )
    include_stop_str_in_output: bool = Field(False, description="Keep the stop string. " + _VLLM_EXTRAS_NOTE)
    bad_words: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, max_length=64, description="Words never generated. " + _VLLM_EXTRAS_NOTE
    )
    allowed_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, min_length=1, description="Only these tokens. " + _VLLM_EXTRAS_NOTE
    )
    structured_outputs: StructuredOutputs | None = Field(
        None, description="json, regex, choice or grammar. " + _VLLM_EXTRAS_NOTE
    )
    ttc: TTCOptions | None = Field(None, description="Test-time compute: strategy, budget, verifier, params.")

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("when using `top_logprobs`, `logprobs` must be set to true.")
        return self

    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(OpenAIRequest):
    model: str | None = Field(None, description="Served model name; another name is a 404 model_not_found.")
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=1)]
    ) = Field(..., description="The prompt: one non-empty string, or a list of exactly one.")
    best_of: int | None = Field(None, ge=1, le=1, description="Refused above 1 (as vLLM: use `n`).")
    echo: bool = Field(False, description="Prepend the prompt to the completion.")
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2, description="Penalty on repeated tokens, by count."
    )
    logit_bias: LogitBias | None = Field(None, description="Token id (as a string) to a bias in [-100, 100].")
    logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token to return.")
    max_tokens: int = Field(16, ge=1, le=32768, description="Longest completion.")
    n: int = Field(1, ge=1, le=128, description="Choices to return; with temperature 0 it must be 1.")
    presence_penalty: float | None = Field(
        None, ge=-2, le=2, description="Penalty on tokens already present."
    )
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Sampling seed.")
    stop: Stop = Field(None, description="Up to 8 stop strings.")
    stream: bool = Field(False, description="Stream chunks as server-sent events.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options (only with stream).")
    suffix: str | None = Field(None, description="Refused (400): this model cannot fill in the middle.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    user: str | None = Field(None, description="Accepted; not applied (end-user id).")
    top_k: int | None = Field(
        None, ge=-1, le=1_000_000, description="Top-k sampling (0 or -1: off). " + _VLLM_EXTRAS_NOTE
    )
    min_p: float | None = Field(None, ge=0, le=1, description="Min-p sampling. " + _VLLM_EXTRAS_NOTE)
    repetition_penalty: float | None = Field(None, gt=0, le=2, description="1 is off. " + _VLLM_EXTRAS_NOTE)
    min_tokens: int = Field(
        0, ge=0, le=32768, description="Tokens before EOS or a stop may end. " + _VLLM_EXTRAS_NOTE
    )
    ignore_eos: bool = Field(False, description="Keep generating past EOS. " + _VLLM_EXTRAS_NOTE)
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, max_length=64, description="Stop tokens. " + _VLLM_EXTRAS_NOTE
    )
    include_stop_str_in_output: bool = Field(False, description="Keep the stop string. " + _VLLM_EXTRAS_NOTE)
    bad_words: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, max_length=64, description="Words never generated. " + _VLLM_EXTRAS_NOTE
    )
    allowed_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, min_length=1, description="Only these tokens. " + _VLLM_EXTRAS_NOTE
    )
    response_format: ResponseFormat | None = Field(
        None, description="text, json_object or json_schema. " + _VLLM_EXTRAS_NOTE
    )
    structured_outputs: StructuredOutputs | None = Field(
        None, description="json, regex, choice or grammar. " + _VLLM_EXTRAS_NOTE
    )
    ttc: TTCOptions | None = Field(None, description="Test-time compute: strategy, budget, verifier, params.")

    @model_validator(mode="after")
    def _one_prompt(self) -> CompletionRequest:
        if self.prompt_text() == "":
            raise ValueError("prompt must not be empty")
        return self

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class OpenAIUsage(BaseModel):
    prompt_tokens: int = Field(..., description="Prompt tokens over every engine call.")
    completion_tokens: int = Field(..., description="Generated tokens over every engine call.")
    total_tokens: int = Field(..., description="prompt_tokens + completion_tokens.")
    prompt_tokens_details: dict[str, int] | None = Field(
        None, description="`cached_tokens`: prefix-cache hits."
    )


class TTCReport(BaseModel):
    """What test-time compute did, attached to OpenAI responses as `ttc`."""

    strategy: str = Field(..., description="Strategy that ran.")
    params: dict[str, Any] = Field(..., description="Strategy parameters as actually used.")
    answer: str | None = Field(..., description="The chosen final answer, null when abstaining.")
    abstained: bool = Field(..., description="True when the service declined to answer.")
    choices_returned: int = Field(
        ...,
        description="Choices in the response: fewer than `n` when the strategy had fewer distinct candidates.",
    )
    warnings: list[str] = Field(
        default_factory=list, description="What differs from the request (e.g. fewer choices than `n`)."
    )
    usage: Usage = Field(..., description="What the request spent.")
    budget: BudgetReport = Field(..., description="Caps and spend side by side.")
    candidates: list[CandidateOut] | None = Field(None, description="Every candidate, when asked for.")
    details: dict[str, Any] = Field(default_factory=dict, description="Strategy-specific information.")


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = Field("assistant", description="Always the assistant.")
    content: str | None = Field(..., description="The text (null when the answer is only tool calls).")
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description="Calls found by the tool-call parser (only with `tools` and TTC_TOOL_CALL_PARSER)."
    )


class ChatCompletionChoice(BaseModel):
    index: int = Field(..., description="Position among the n choices.")
    message: ChatCompletionMessage = Field(..., description="The assistant's answer.")
    logprobs: dict[str, Any] | None = Field(
        ..., description="`content`: per-token log probabilities, if asked."
    )
    finish_reason: str | None = Field(..., description="stop, length or tool_calls.")


class ChatCompletionResponse(BaseModel):
    """A chat completion (stream: false); with `stream: true` the body is server-sent `chat.completion.chunk`s."""

    id: str = Field(..., description="Request id.")
    object: Literal["chat.completion"] = Field("chat.completion", description="Object type.")
    created: int = Field(..., description="Unix time.")
    model: str = Field(..., description="Served model.")
    choices: list[ChatCompletionChoice] = Field(..., description="The choices (n of them; see ttc.warnings).")
    usage: OpenAIUsage = Field(..., description="Tokens spent, every engine call of a ttc run included.")
    ttc: TTCReport | None = Field(None, description="What test-time compute did (only with `ttc`).")


class CompletionChoice(BaseModel):
    index: int = Field(..., description="Position among the n choices.")
    text: str = Field(..., description="The completion (after the prompt with `echo`).")
    logprobs: dict[str, Any] | None = Field(
        ..., description="tokens, token_logprobs, top_logprobs, text_offset."
    )
    finish_reason: str | None = Field(..., description="stop or length.")


class CompletionResponse(BaseModel):
    """A text completion (stream: false); with `stream: true` the body is server-sent `text_completion`s."""

    id: str = Field(..., description="Request id.")
    object: Literal["text_completion"] = Field("text_completion", description="Object type.")
    created: int = Field(..., description="Unix time.")
    model: str = Field(..., description="Served model.")
    choices: list[CompletionChoice] = Field(..., description="The choices.")
    usage: OpenAIUsage = Field(..., description="Tokens spent, every engine call of a ttc run included.")
    ttc: TTCReport | None = Field(None, description="What test-time compute did (only with `ttc`).")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "ttc-service"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------------------------------------
# Corpora (issue 4): /v1/corpora
# ---------------------------------------------------------------------------------------------------------


class CorpusCreate(RequestBody):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ...,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Letters, digits, '_', '.', '-' (starting with a letter or digit).",
    )
    embedding_model: str | None = Field(
        None,
        max_length=1000,
        description=(
            "Sentence-transformers model: TTC_EMBEDDING_MODEL (the default) or one listed in TTC_EMBEDDING_MODELS."
        ),
    )


class DocumentIn(Strict):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, max_length=256, description="Re-adding an id replaces the document.")
    title: str = Field("", max_length=1000, description="Title, embedded with every chunk.")
    text: str = Field(..., max_length=1_000_000, description="The text; long texts are chunked.")
    metadata: dict[str, Any] | None = Field(None, description="Kept with the document, not searched.")


class DemonstrationIn(Strict):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=256, description="Re-adding an id replaces it.")
    question: str = Field(..., min_length=1, max_length=4000, description="A question the corpus answers.")
    answer: str = Field(..., min_length=1, max_length=4000, description="Its answer.")


class DocumentsAdd(RequestBody):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(default_factory=list, description="Documents to add or replace.")
    demonstrations: list[DemonstrationIn] = Field(
        default_factory=list, description="Worked examples for DRAG/IterDRAG prompts (question, answer)."
    )
    # -- background jobs (issue 13) --
    background: bool = Field(
        False, description="Ingest as a background job: 202 with the job at once (large batches)."
    )


class CorpusSearch(RequestBody):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=10000, description="What to look for.")
    k: int = Field(5, ge=1, le=100, description="Chunks to return, best first.")


# ---------------------------------------------------------------------------------------------------------
# Budget allocator (issue 5): verifier calibration and the engine's runtime model
# ---------------------------------------------------------------------------------------------------------


class LabelledExample(Strict):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., min_length=1, description="The question, sent through the chat template.")
    answer: str = Field(..., min_length=1, description="Its reference final answer.")


class CalibrateVerifierRequest(RequestBody):
    """Measure a verifier's completeness c and soundness s on a task family from labelled examples."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(
        "default", min_length=1, max_length=64, description="Task family the numbers apply to."
    )
    examples: list[LabelledExample] = Field(
        ..., min_length=1, max_length=500, description="Questions with their reference answers."
    )
    samples_per_question: int = Field(4, ge=1, le=32, description="Candidates sampled per question.")
    threshold: float = Field(0.5, ge=0, le=1, description="A score at or above this counts as accepted.")
    options: dict[str, Any] = Field(default_factory=dict, description="The verifier's options.")
    sampling: SamplingOptions = Field(default_factory=SamplingOptions, description="Sampling of candidates.")
    answer: AnswerOptions = Field(default_factory=AnswerOptions, description="How final answers are read.")
    budget: BudgetSpec | None = Field(
        None,
        description=(
            "Caps on the whole measurement (samples and verifier calls); unset axes get the service's caps "
            "(TTC_MAX_CALIBRATION_TOKENS, TTC_MAX_CALIBRATION_SECONDS), which the request cannot exceed."
        ),
    )


class VerifierCalibrationOut(BaseModel):
    verifier: str = Field(..., description="Verifier name.")
    family: str = Field(..., description="Task family.")
    completeness: float = Field(..., description="c = P(accept | correct), Laplace-smoothed.")
    soundness: float = Field(..., description="s = P(reject | wrong), Laplace-smoothed.")
    correct_examples: int = Field(..., description="Correct candidates the measurement saw.")
    wrong_examples: int = Field(..., description="Wrong candidates the measurement saw.")
    threshold: float = Field(..., description="Acceptance threshold on the score.")
    source: str = Field(..., description="measured, default or exact.")
    measured_at: float = Field(..., description="Unix time of the measurement.")


class EngineCalibrationRequest(RequestBody):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        default_factory=lambda: [1, 4, 16], min_length=1, max_length=6, description="Samples per timed call."
    )
    max_tokens: list[Annotated[int, Field(ge=2, le=512)]] = Field(
        default_factory=lambda: [16, 64], min_length=1, max_length=4, description="Lengths of timed calls."
    )
    budget: BudgetSpec | None = Field(
        None,
        description=(
            "Caps on the whole sweep; the sweep stops at the first call the budget cannot pay in full. Unset "
            "axes get the service's caps (TTC_MAX_CALIBRATION_TOKENS, TTC_MAX_CALIBRATION_SECONDS)."
        ),
    )


# -- API keys and usage (issue 10) ----------------------------------------------------------------------------


class KeyLimitsSpec(Strict):
    """A key's quotas per window, concurrency, and per-request ceilings; omitted means unlimited."""

    model_config = ConfigDict(extra="forbid")

    tokens_per_minute: int | None = Field(None, ge=0, description="Completion tokens per clock minute.")
    tokens_per_day: int | None = Field(None, ge=0, description="Completion tokens per UTC day.")
    eflops_per_minute: float | None = Field(None, ge=0, description="Equivalent FLOPs per clock minute.")
    eflops_per_day: float | None = Field(None, ge=0, description="Equivalent FLOPs per UTC day.")
    max_concurrent: int | None = Field(None, ge=1, le=100_000, description="Requests running at once.")
    max_tokens: int | None = Field(None, ge=1, description="Per-request ceiling on budget.tokens.")
    max_eflops: float | None = Field(None, gt=0, description="Per-request ceiling on budget.eflops.")
    max_seconds: float | None = Field(None, gt=0, description="Per-request ceiling on budget.seconds.")
    max_context_tokens: int | None = Field(
        None, ge=1, description="Per-request ceiling on budget.context_tokens."
    )


class KeyCreate(RequestBody):
    """A new API key: its name (unique), scope and limits."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Unique name of the key."
    )
    scope: Literal["user", "admin"] = Field(
        "user", description="user: solve, chat, completions, models, corpus reads, usage; admin: everything."
    )
    limits: KeyLimitsSpec = Field(default_factory=KeyLimitsSpec, description="Quotas and ceilings.")


class KeyOut(BaseModel):
    """A key as stored (never its secret, except once in the answer that creates it)."""

    object: Literal["api_key"] = Field("api_key", description="Always `api_key`.")
    name: str = Field(..., description="Unique name of the key.")
    scope: Literal["user", "admin"] = Field(..., description="user or admin.")
    created: float = Field(..., description="Unix time of creation.")
    limits: KeyLimitsSpec = Field(..., description="Quotas and ceilings.")
    key: str | None = Field(None, description="The secret: returned once, at creation; store it now.")


# ---------------------------------------------------------------------------------------------------------
# Background jobs (issue 13): /v1/jobs
# ---------------------------------------------------------------------------------------------------------

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class AttemptSpend(BaseModel):
    attempt: int = Field(..., ge=1, description="Which run of the job (1 for the first).")
    completion_tokens: int = Field(..., ge=0, description="Tokens its finished engine calls generated.")
    eflops: float = Field(..., ge=0, description="Their eFLOPs.")
    reserved_tokens: int = Field(
        0,
        ge=0,
        description=(
            "Tokens its calls in flight held reserved (their worst case) when it last recorded; a run lost "
            "with its replica stays charged these in the key's quota."
        ),
    )
    reserved_eflops: float = Field(0.0, ge=0, description="The same in eFLOPs.")


class JobUsage(BaseModel):
    model_config = ConfigDict(extra="allow")

    attempts: int = Field(..., description="Runs started (more than 1: a replica died or drained mid-run).")
    per_attempt: list[AttemptSpend] = Field(
        default_factory=list,
        description=(
            "What each run spent, as it last recorded it (within half a second of each engine call's start "
            "and end): a run lost with its replica stays charged to the key's quota, and is reported here."
        ),
    )


class Job(BaseModel):
    id: str = Field(..., description="Job id.")
    object: Literal["ttc.job"] = "ttc.job"
    kind: str = Field(..., description="What runs: `solve`.")
    status: JobStatus = Field(..., description="queued, running, succeeded, failed or cancelled.")
    created_at: float = Field(..., description="Unix time it was submitted.")
    started_at: float | None = Field(None, description="Unix time its latest run started.")
    finished_at: float | None = Field(None, description="Unix time it reached its final status.")
    expires_at: float | None = Field(
        None, description="Unix time after which it is forgotten, once finished."
    )
    budget: dict[str, Any] | None = Field(None, description="The request's budget, as given.")
    usage: JobUsage = Field(..., description="Attempts, plus the result's usage once it succeeded.")
    result: dict[str, Any] | None = Field(
        None, description="Once succeeded: the same body a synchronous call returns."
    )
    error: dict[str, Any] | None = Field(None, description="Once failed: the OpenAI-style error object.")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job] = Field(..., description="The caller's jobs, newest first.")


# ---------------------------------------------------------------------------------------------------------
# Batches (issue 16): POST /v1/solve/batch, and OpenAI's /v1/files + /v1/batches
# ---------------------------------------------------------------------------------------------------------


BatchPlan = Literal["best_of_n", "deepconf", "revision", "beam_search", "dvts", "rebase", "ets"]


class BatchAllocation(Strict):
    """How the batch's one budget is shared between its problems (strategies/allocation/batch.py)."""

    model_config = ConfigDict(extra="forbid")

    probe_samples: int = Field(
        4, ge=1, le=16, description="Samples of every problem's probe (they join its vote)."
    )
    min_samples: int = Field(
        1,
        ge=0,
        le=64,
        description="Samples every problem gets whatever its estimate (0 needs allow_abstain).",
    )
    max_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Largest share of the batch budget one problem may use (min_samples wins).",
    )
    allow_abstain: bool = Field(
        False,
        description="When the budget cannot pay min_samples for every problem, leave some with none (they "
        "abstain) instead of refusing the batch.",
    )
    min_gain: float = Field(
        0.002,
        ge=0,
        le=1,
        description="A problem stops (settled or hopeless) when its next step is predicted to add less accuracy "
        "than this per sample, so a batch may finish under its cap; 0 never stops one early and spends the whole "
        "budget (0.002: measured best of the batch benchmark's grid on the testbed).",
    )
    round_share: float = Field(
        1.0, gt=0, le=1, description="Share of the budget left (worst case) one round may hand out."
    )
    max_samples: int = Field(64, ge=1, le=1024, description="Most samples one problem may get.")
    max_rounds: int = Field(32, ge=1, le=256, description="Most allocation rounds after the probe.")
    vote: Literal["confidence", "majority"] = Field(
        "confidence",
        description="How a problem without a verifier picks its answer from its samples: `confidence` is "
        "DeepConf offline (samples drawn with logprobs; the most confident keep_percent% vote, weighted by "
        "their lowest group confidence), `majority` a plain vote. With a verifier: its weighted vote.",
    )
    keep_percent: float = Field(
        10.0,
        gt=0,
        le=100,
        description="The confidence vote: the top share (%) of samples by confidence that vote.",
    )
    consensus: float | None = Field(
        None,
        gt=0.5,
        le=1,
        description="Stop a problem once its leading answer holds this share of its vote (weighted by "
        "confidence or verifier score; counted for majority): DeepConf's consensus stop. None: never.",
    )
    strategies: list[BatchPlan] | None = Field(
        None,
        min_length=1,
        description="What a problem may get after its probe: `best_of_n` (more samples for its vote) and whole "
        "runs of the strategies auto has measured profiles of (deepconf, revision; beam_search, dvts, rebase, "
        "ets with a verifier). None: all of them.",
    )

    @model_validator(mode="after")
    def _zero_needs_abstain(self) -> BatchAllocation:
        if self.min_samples == 0 and not self.allow_abstain:
            raise ValueError("allocation.min_samples 0 needs allocation.allow_abstain true")
        return self


class BatchProblem(PromptOrMessages):
    """One problem: the /v1/solve body without `budget` (the batch has one), with an optional `id`."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["messages"]}, {"required": ["prompt"]}]}
    )

    id: str | None = Field(None, min_length=1, max_length=256, description="Your id; default: its position.")
    model: str | None = Field(None, description="Served model name; optional (there is one model).")
    messages: list[ChatMessage] | SkipJsonSchema[None] = Field(
        None, min_length=1, max_length=1024, description="The conversation (OpenAI format); or give `prompt`."
    )
    prompt: str | SkipJsonSchema[None] = Field(
        None, min_length=1, description="A raw question, sent through the chat template; or give `messages`."
    )
    strategy: Literal["auto"] = Field(
        "auto", description="Only `auto`: the batch allocator chooses what every problem gets."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="auto's params; only `family` (the verifier calibration's task family) applies here.",
    )
    verifier: VerifierSpec | None = Field(
        None, description="Verifier that scores candidates (weighted vote)."
    )
    answer: AnswerOptions = Field(default_factory=AnswerOptions, description="How final answers are read.")
    sampling: SamplingOptions = Field(
        default_factory=SamplingOptions, description="Sampling of each candidate."
    )
    return_candidates: bool = Field(False, description="Include every candidate in its result.")
    reference_answer: str | None = Field(
        None,
        min_length=1,
        max_length=4000,
        description="The known answer, if any: only for `correct` and the accuracy in progress and result; "
        "the allocator never sees it.",
    )


class BatchSolveRequest(RequestBody):
    """Many problems, one budget: a background job (202) whose result lists every problem's answer."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Served model name; optional (there is one model).")
    problems: list[BatchProblem] = Field(..., min_length=1, max_length=10_000, description="The problems.")
    budget: BudgetSpec = Field(
        ..., description="Hard caps for the whole batch (tokens, eflops, seconds), as /v1/solve's for one."
    )
    allocation: BatchAllocation = Field(
        default_factory=BatchAllocation, description="How the budget is shared (fairness, stopping)."
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> BatchSolveRequest:
        ids = [problem.id for problem in self.problems if problem.id is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("problem ids must be unique")
        if self.budget.tokens is None and self.budget.eflops is None:
            raise ValueError("the batch budget needs `tokens` or `eflops` (its hard cap)")
        return self


class BatchProblemUsage(BaseModel):
    eflops: float = Field(..., description="eFLOPs of its samples.")
    completion_tokens: int = Field(..., description="Tokens of its samples.")


class BatchProblemResult(BaseModel):
    id: str = Field(..., description="The problem's id (its position when none was given).")
    answer: str | None = Field(..., description="The chosen final answer, null when abstaining.")
    text: str = Field(..., description="The chosen candidate's text.")
    abstained: bool = Field(..., description="True when no answer was given.")
    samples: int = Field(..., description="Samples it got (probe included).")
    correct: bool | None = Field(None, description="Against `reference_answer`, when one was given.")
    params: dict[str, Any] = Field(..., description="What ran: best-of-N with its n and vote.")
    usage: BatchProblemUsage = Field(..., description="What its samples spent.")
    candidates: list[CandidateOut] | None = Field(None, description="Every candidate, when asked for.")
    details: dict[str, Any] = Field(
        default_factory=dict, description="`allocation`: what it got, its estimates, and why it stopped."
    )


class BatchSummary(BaseModel):
    problems: int = Field(..., description="Problems in the batch.")
    answered: int = Field(..., description="Problems with an answer.")
    abstained: int = Field(..., description="Problems without one.")
    samples: int = Field(..., description="Samples drawn over all problems.")
    rounds: int = Field(..., description="Allocation rounds after the probe.")
    statuses: dict[str, int] = Field(..., description="Why problems stopped: settled, hopeless, capped, ...")
    known_answers: int = Field(..., description="Problems with a reference answer.")
    correct: int = Field(..., description="Of those, answered correctly.")
    accuracy: float | None = Field(None, description="correct / known_answers.")


class BatchSolveResponse(BaseModel):
    id: str = Field(..., description="Batch id.")
    object: Literal["ttc.solve.batch"] = "ttc.solve.batch"
    created: int = Field(..., description="Unix time.")
    model: str = Field(..., description="Served model.")
    problems: list[BatchProblemResult] = Field(..., description="Every problem, in the request's order.")
    summary: BatchSummary = Field(..., description="Batch totals.")
    usage: Usage = Field(..., description="What the whole batch spent.")
    budget: BudgetReport = Field(..., description="The batch's caps and spend side by side.")


class FileObject(BaseModel):
    """OpenAI's file object (POST /v1/files with purpose `batch`; batch output files)."""

    id: str = Field(..., description="File id.")
    object: Literal["file"] = "file"
    bytes: int = Field(..., description="Size in bytes.")
    created_at: int = Field(..., description="Unix time.")
    expires_at: int | None = Field(None, description="Unix time it is forgotten (TTC_JOB_TTL_SECONDS).")
    filename: str = Field(..., description="The uploaded name.")
    purpose: Literal["batch", "batch_output"] = Field(..., description="batch (input) or batch_output.")
    status: Literal["processed"] = Field("processed", description="Always processed (stored at once).")


class BatchTTC(Strict):
    """The batch's one total budget and its allocation options (`extra_body={"ttc": {...}}`)."""

    model_config = ConfigDict(extra="forbid")

    budget: BudgetSpec = Field(..., description="Hard caps for the whole batch, as in POST /v1/solve/batch.")
    allocation: BatchAllocation = Field(
        default_factory=BatchAllocation, description="How the budget is shared (fairness, stopping)."
    )


class BatchCreate(RequestBody):
    """OpenAI's POST /v1/batches, plus `ttc` (the total budget): runs as a /v1/solve/batch job."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(
        ..., min_length=1, max_length=128, description="A file uploaded with purpose batch."
    )
    endpoint: Literal["/v1/chat/completions"] = Field(..., description="Only chat completions.")
    completion_window: Literal["24h"] = Field(
        ..., description="Only 24h (it runs as soon as a worker is free)."
    )
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16, description="Kept and returned."
    )
    output_expires_after: dict[str, Any] | None = Field(
        None, description="Accepted; outputs expire after TTC_JOB_TTL_SECONDS."
    )
    ttc: BatchTTC | None = Field(
        None, description="Required: the total budget (the openai client sends it with extra_body)."
    )


class BatchRequestCounts(BaseModel):
    total: int = Field(..., description="Requests in the input file.")
    completed: int = Field(..., description="Requests answered.")
    failed: int = Field(..., description="Requests that failed.")


class BatchObject(BaseModel):
    """OpenAI's batch object, for a batch job."""

    id: str = Field(..., description="Batch id (the id of its job in /v1/jobs too).")
    object: Literal["batch"] = "batch"
    endpoint: str = Field(..., description="The endpoint every request line names.")
    errors: dict[str, Any] | None = Field(None, description="Why it failed, OpenAI-style.")
    input_file_id: str = Field(..., description="The input file.")
    completion_window: str = Field(..., description="24h.")
    status: Literal["validating", "in_progress", "completed", "failed", "cancelled"] = Field(
        ..., description="validating (queued), in_progress, completed, failed or cancelled."
    )
    output_file_id: str | None = Field(None, description="Once completed: the output file (JSONL).")
    error_file_id: str | None = Field(None, description="Never set: failed requests fail the batch.")
    created_at: int = Field(..., description="Unix time.")
    in_progress_at: int | None = Field(None, description="Unix time its run started.")
    expires_at: int | None = Field(None, description="Unix time its record is forgotten.")
    completed_at: int | None = Field(None, description="Unix time it completed.")
    failed_at: int | None = Field(None, description="Unix time it failed.")
    cancelled_at: int | None = Field(None, description="Unix time it was cancelled.")
    request_counts: BatchRequestCounts = Field(..., description="Requests by outcome.")
    metadata: dict[str, str] | None = Field(None, description="As given.")
    usage: dict[str, Any] | None = Field(None, description="Once completed: what the whole batch spent.")
    ttc: dict[str, Any] | None = Field(None, description="The total budget, and once completed the summary.")
