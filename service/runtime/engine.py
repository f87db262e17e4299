"""The engine interface every strategy talks to: "continue this prompt, n times".

Two implementations: `service.runtime.engine_vllm.InProcessEngine` (vLLM's AsyncLLM in this process, the default)
and `service.runtime.engine_remote.RemoteEngine` (any OpenAI-compatible server). Prompts may be text or token ids;
token ids let a search continue a node exactly, so every branch shares its prefix in the prefix cache.

Cancelling the task that awaits `generate` (or iterates `stream`) aborts the work in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.runtime.cost import ModelShape
from service.runtime.errors import EngineLost

logger = logging.getLogger(__name__)

Prompt = str | list[int]

# Finish reason of a sample its caller stopped while it was generated (`generate(..., stop=...)`).
STOPPED = "stopped"


@dataclass(frozen=True)
class StructuredOutput:
    """One guided-decoding constraint, as vLLM's StructuredOutputsParams names it (exactly one of json, regex,
    choice, grammar, json_object is set; `json` is a JSON Schema as text, so the spec stays hashable)."""

    json: str | None = None
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, in the shape of vLLM's `structured_outputs` (both engines send this)."""
        body: dict[str, Any] = {}
        if self.json is not None:
            body["json"] = json.loads(self.json)
        if self.regex is not None:
            body["regex"] = self.regex
        if self.choice is not None:
            body["choice"] = list(self.choice)
        if self.grammar is not None:
            body["grammar"] = self.grammar
        if self.json_object is not None:
            body["json_object"] = self.json_object
        if self.disable_any_whitespace:
            body["disable_any_whitespace"] = True
        if self.disable_additional_properties:
            body["disable_additional_properties"] = True
        if self.whitespace_pattern is not None:
            body["whitespace_pattern"] = self.whitespace_pattern
        return body

    @property
    def is_json(self) -> bool:
        return self.json is not None or bool(self.json_object)


@dataclass(frozen=True)
class SamplingSpec:
    """What vLLM's SamplingParams needs from us; immutable so it can never leak between requests. The fields
    after `include_stop_str_in_output` are vLLM's own sampling parameters, passed through unchanged by both
    engines (their defaults are vLLM's "off")."""

    n: int = 1
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None
    include_stop_str_in_output: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    min_tokens: int = 0
    ignore_eos: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    bad_words: tuple[str, ...] = ()
    allowed_token_ids: tuple[int, ...] | None = None
    structured: StructuredOutput | None = None

    def engine_extras(self) -> dict[str, Any]:
        """vLLM's extra sampling parameters that differ from their defaults, named as vLLM names them (keyword
        arguments of SamplingParams, and fields of a vLLM server's request body alike)."""
        extras: dict[str, Any] = {}
        if self.presence_penalty:
            extras["presence_penalty"] = self.presence_penalty
        if self.frequency_penalty:
            extras["frequency_penalty"] = self.frequency_penalty
        if self.repetition_penalty != 1.0:
            extras["repetition_penalty"] = self.repetition_penalty
        if self.top_k not in (0, -1):
            extras["top_k"] = self.top_k
        if self.min_p:
            extras["min_p"] = self.min_p
        if self.min_tokens:
            extras["min_tokens"] = self.min_tokens
        if self.ignore_eos:
            extras["ignore_eos"] = True
        if self.stop_token_ids:
            extras["stop_token_ids"] = list(self.stop_token_ids)
        if self.bad_words:
            extras["bad_words"] = list(self.bad_words)
        if self.allowed_token_ids is not None:
            extras["allowed_token_ids"] = list(self.allowed_token_ids)
        return extras


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Sample:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Generation:
    samples: list[Sample]
    prompt_tokens: int
    cached_prompt_tokens: int
    seconds: float = 0.0
    restarts: int = 0  # times the call was redone on another engine after its engine died

    @property
    def completion_tokens(self) -> int:
        return sum(sample.tokens for sample in self.samples)


@dataclass(frozen=True)
class Delta:
    """A piece of one sample as the engine produced it (for streaming straight through)."""

    index: int
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass
class StreamState:
    """Filled in while a stream runs: prompt size and cache hits are known once the engine answers."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    restarts: int = 0  # tries the engine redid elsewhere (several engines) after a failure


class Engine(Protocol):
    """What the strategies and routes may ask of an engine."""

    model_name: str
    max_model_len: int
    shape: ModelShape
    max_token_chars: int  # the vocabulary's longest token: a longer text than context x this cannot fit

    def render_chat(
        self, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def stream(self, prompt: Prompt, spec: SamplingSpec, state: StreamState) -> AsyncIterator[Delta]: ...

    def running_requests(self) -> int: ...

    async def check_health(self) -> None: ...

    async def close(self) -> None: ...


def count_prompt_tokens(engine: Engine, prompt: Prompt) -> int:
    return len(prompt) if isinstance(prompt, list) else len(engine.encode(prompt))


StopRule = Callable[[Sample], bool]


@contextlib.asynccontextmanager
async def closing(stream: AsyncIterator[Delta]) -> AsyncIterator[AsyncIterator[Delta]]:
    """Close a stream when the block ends, also early: closing it is what aborts its request in the engine, and
    a stream left to the garbage collector is closed only later."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def generate(
    engine: Engine,
    prompt: Prompt,
    spec: SamplingSpec,
    deadline: float | None = None,
    stop: StopRule | None = None,
) -> Generation:
    """Run one engine call to completion, or until `deadline` (time.monotonic()); then abort it and
    return what each sample had so far, marked finish_reason "abort".

    `stop` is asked after every piece of a sample; when it says True the call is aborted in the engine at once
    (its stream closed) and that sample is marked finish_reason "stopped". It stops the whole call, so use it
    with n = 1 (one call per sample) to stop samples one by one.

    If the engine serving the call dies mid-way (`EngineLost`, only raised when another engine can take
    over), the call restarts from its prompt on the other engine; `Generation.restarts` says how often.
    """
    started = time.monotonic()
    restarts = 0
    while True:
        samples = [Sample() for _ in range(spec.n)]
        state = StreamState()
        try:
            await _consume(engine, prompt, spec, state, samples, deadline, stop)
        except EngineLost as exc:
            if restarts >= MAX_RESTARTS:
                raise
            restarts += 1
            logger.warning("engine lost under a call, restarting it elsewhere (%d): %s", restarts, exc)
            continue
        return Generation(
            samples,
            state.prompt_tokens,
            state.cached_prompt_tokens,
            time.monotonic() - started,
            restarts + state.restarts,
        )


MAX_RESTARTS = 3


async def _consume(
    engine: Engine,
    prompt: Prompt,
    spec: SamplingSpec,
    state: StreamState,
    samples: list[Sample],
    deadline: float | None,
    stop: StopRule | None = None,
) -> None:
    async def consume() -> None:
        async with closing(engine.stream(prompt, spec, state)) as deltas:
            async for delta in deltas:
                sample = samples[delta.index]
                sample.text += delta.text
                sample.token_ids.extend(delta.token_ids)
                if delta.logprobs is not None:
                    sample.logprobs = (sample.logprobs or []) + list(delta.logprobs)
                if delta.finish_reason is not None:
                    sample.finish_reason = delta.finish_reason
                elif stop is not None and stop(sample):
                    sample.finish_reason = STOPPED
                    return

    if deadline is None:
        await consume()
        return
    try:
        async with asyncio.timeout_at(_loop_time(deadline)):
            await consume()
    except TimeoutError:
        for sample in samples:
            sample.finish_reason = sample.finish_reason or "abort"


def _loop_time(monotonic_deadline: float) -> float:
    """asyncio's clock is time.monotonic on every platform we run on; convert defensively anyway."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())
