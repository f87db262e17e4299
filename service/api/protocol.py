"""Every request and response model of the HTTP API.

OpenAI's fields come first, in OpenAI's order, then ours; bounds live in the types, so a bad value is a 400
before any work starts.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# ---------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------


class TextContentPart(BaseModel):
    type: Literal["text"] = Field(..., description="Only text parts are supported.")
    text: str = Field(..., description="The text.")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(..., description="Who speaks.")
    content: str | list[TextContentPart] | None = Field(..., description="What is said.")
    name: str | None = Field(None, description="Optional speaker name.")

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class BudgetSpec(BaseModel):
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


class VerifierSpec(BaseModel):
    """A verifier by name plus its options (e.g. `{"name": "reference", "answer": "42"}`)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(..., min_length=1, max_length=64, description="Verifier name, see GET /v1/verifiers.")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SamplingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.8, ge=0, le=2, description="Sampling temperature of every sample.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, le=32768, description="Longest single sample, in tokens.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Seed for reproducible sampling.")
    stop: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, max_length=8, description="Stop strings."
    )


class AnswerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["number", "boxed", "text", "regex"] = Field(
        "number", description="How the final answer is read out of a candidate."
    )
    pattern: str | None = Field(
        None, max_length=1000, description="For `regex`: group 1 (or the match) is the answer."
    )

    @model_validator(mode="after")
    def _pattern_for_regex(self) -> AnswerOptions:
        if self.type == "regex":
            import re

            if not self.pattern:
                raise ValueError("answer.pattern is required when answer.type is 'regex'")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"answer.pattern is not a valid regular expression: {exc}") from exc
        return self


class RagOptions(BaseModel):
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


class TTCOptions(BaseModel):
    """Test-time compute options: the body of `ttc` in the OpenAI endpoints, and part of /v1/solve."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(
        "auto",
        min_length=1,
        max_length=64,
        description="Strategy name, see GET /v1/strategies; `auto` chooses one per prompt within the budget.",
    )
    budget: BudgetSpec | None = Field(None, description="Hard caps; the service spends up to them.")
    verifier: VerifierSpec | None = Field(None, description="Verifier that scores candidates.")
    params: dict[str, Any] = Field(default_factory=dict, description="Strategy options (e.g. n, selection).")
    answer: AnswerOptions = Field(default_factory=AnswerOptions, description="How final answers are read.")
    return_candidates: bool = Field(False, description="Include every candidate in the response.")
    rag: RagOptions | None = Field(None, description="Retrieval options for the RAG strategies.")


# ---------------------------------------------------------------------------------------------------------
# /v1/solve
# ---------------------------------------------------------------------------------------------------------


class SolveRequest(TTCOptions):
    model: str | None = Field(None, description="Served model name; optional (there is one model).")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1, max_length=1024, description="The conversation (OpenAI format); or give `prompt`."
    )
    prompt: str | None = Field(
        None, min_length=1, description="A raw question, sent through the chat template."
    )
    sampling: SamplingOptions = Field(
        default_factory=SamplingOptions, description="Sampling of each candidate."
    )
    stream: bool = Field(False, description="Send server-sent progress events, then the result.")

    @model_validator(mode="after")
    def _one_input(self) -> SolveRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` and `prompt`")
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


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="Send a last chunk with usage.")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Served model name.")
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=1024, description="The conversation.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted; not applied.")
    logprobs: bool = Field(False, description="Return log probabilities of the output tokens.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token with logprobs.")
    max_tokens: int | None = Field(None, ge=1, le=32768, description="Longest completion (deprecated name).")
    max_completion_tokens: int | None = Field(None, ge=1, le=32768, description="Longest completion.")
    n: int = Field(1, ge=1, le=128, description="Choices to return.")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted; not applied.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Sampling seed.")
    stop: str | list[str] | None = Field(None, description="Up to 8 stop strings.")
    stream: bool = Field(False, description="Stream chunks as server-sent events.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    user: str | None = Field(None, description="End-user id (logged only).")
    ttc: TTCOptions | None = Field(None, description="Test-time compute: strategy, budget, verifier, params.")

    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Served model name.")
    prompt: str | list[str] = Field(..., description="The prompt (one string, or a list of exactly one).")
    echo: bool = Field(False, description="Prepend the prompt to the completion.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted; not applied.")
    logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token to return.")
    max_tokens: int = Field(16, ge=1, le=32768, description="Longest completion.")
    n: int = Field(1, ge=1, le=128, description="Choices to return.")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted; not applied.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Sampling seed.")
    stop: str | list[str] | None = Field(None, description="Up to 8 stop strings.")
    stream: bool = Field(False, description="Stream chunks as server-sent events.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    user: str | None = Field(None, description="End-user id (logged only).")
    ttc: TTCOptions | None = Field(None, description="Test-time compute: strategy, budget, verifier, params.")

    @model_validator(mode="after")
    def _one_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("prompt must be a string or a list of exactly one string")
        if self.prompt_text() == "":
            raise ValueError("prompt must not be empty")
        return self

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class TTCReport(BaseModel):
    """What test-time compute did, attached to OpenAI responses as `ttc`."""

    strategy: str
    params: dict[str, Any]
    answer: str | None
    abstained: bool
    usage: Usage
    budget: BudgetReport
    candidates: list[CandidateOut] | None = None
    details: dict[str, Any] = Field(default_factory=dict)


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


class CorpusCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=64, description="Letters, digits, '_', '.', '-'.")
    embedding_model: str | None = Field(
        None, description="Sentence-transformers model (default: the service's TTC_EMBEDDING_MODEL)."
    )


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, max_length=256, description="Re-adding an id replaces the document.")
    title: str = Field("", max_length=1000, description="Title, embedded with every chunk.")
    text: str = Field(..., max_length=1_000_000, description="The text; long texts are chunked.")
    metadata: dict[str, Any] | None = Field(None, description="Kept with the document, not searched.")


class DemonstrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=256, description="Re-adding an id replaces it.")
    question: str = Field(..., min_length=1, max_length=4000, description="A question the corpus answers.")
    answer: str = Field(..., min_length=1, max_length=4000, description="Its answer.")


class DocumentsAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(default_factory=list, description="Documents to add or replace.")
    demonstrations: list[DemonstrationIn] = Field(
        default_factory=list, description="Worked examples for DRAG/IterDRAG prompts (question, answer)."
    )


class CorpusSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=10000, description="What to look for.")
    k: int = Field(5, ge=1, le=100, description="Chunks to return, best first.")


# ---------------------------------------------------------------------------------------------------------
# Budget allocator (issue 5): verifier calibration and the engine's runtime model
# ---------------------------------------------------------------------------------------------------------


class LabelledExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., min_length=1, description="The question, sent through the chat template.")
    answer: str = Field(..., min_length=1, description="Its reference final answer.")


class CalibrateVerifierRequest(BaseModel):
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


class EngineCalibrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        default_factory=lambda: [1, 4, 16], min_length=1, max_length=6, description="Samples per timed call."
    )
    max_tokens: list[Annotated[int, Field(ge=2, le=512)]] = Field(
        default_factory=lambda: [16, 64], min_length=1, max_length=4, description="Lengths of timed calls."
    )
