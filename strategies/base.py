"""What every strategy takes and returns.

    async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result

`Task` is the request after validation (prompt rendered, defaults applied); `Result` is what the route turns
into a response. Usage is not in the result: the budget tracker has it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine, Sample, SamplingSpec
from service.runtime.errors import InvalidRequest
from service.runtime.settings import Settings
from verifiers.answers import AnswerSpec, extract_answer
from verifiers.base import Verifier

ProgressCallback = Callable[[dict[str, Any]], None]


class Passage(Protocol):
    """A retrieved chunk (service.store.corpora.Chunk)."""

    @property
    def title(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...


class Retriever(Protocol):
    """One corpus, as the RAG strategies see it."""

    async def search(self, query: str, k: int) -> Sequence[Passage]: ...

    async def demonstrations(self, m: int) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class RagContext:
    """The request's `rag` options plus the corpus to retrieve from (no global index anywhere)."""

    corpus: str
    retriever: Retriever
    k: int | None = None
    demos: int | None = None
    iterations: int | None = None


@dataclass(frozen=True)
class Task:
    prompt: str
    question: str
    params: Mapping[str, Any]
    sampling: SamplingSpec
    answer: AnswerSpec
    settings: Settings
    budget_given: bool = False
    progress: ProgressCallback | None = None
    rag: RagContext | None = None  # retrieval, for the RAG strategies
    redis: Redis | None = None  # the service's Redis client (auto's calibrations and memory)

    def report(self, event: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(event)


@dataclass
class Candidate:
    text: str
    answer: str | None
    tokens: int = 0
    finish_reason: str | None = None
    score: float | None = None
    votes: int = 0

    @classmethod
    def from_sample(cls, sample: Sample, spec: AnswerSpec) -> Candidate:
        return cls(sample.text, extract_answer(sample.text, spec), sample.tokens, sample.finish_reason)


@dataclass
class Result:
    text: str
    answer: str | None
    candidates: list[Candidate]
    params: dict[str, Any]
    abstained: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def settle_empty(result: Result) -> Result:
    """The empty-answer rule: a run that ends with no extractable answer is never a silent success. It
    returns the best candidate that has an answer (most votes, then highest score), or abstains and says why."""
    if result.abstained or result.answer is not None:
        return result
    answered = [candidate for candidate in result.candidates if candidate.answer is not None]
    if answered:
        best = max(answered, key=lambda c: (c.votes, c.score if c.score is not None else 0.0))
        result.details["empty_answer"] = (
            "the final step gave no extractable answer; this is the best candidate that has one"
        )
        result.text, result.answer = best.text, best.answer
        return result
    result.abstained = True
    result.details["abstain_reason"] = (
        "no extractable answer: the final text was empty"
        if not result.text.strip()
        else "no extractable answer in the final text (see `answer.type`)"
    )
    return result


Strategy = Callable[[Task, Engine, "Verifier | None", BudgetTracker], Awaitable[Result]]

ParamsModel = TypeVar("ParamsModel", bound=BaseModel)


def parse_params(model: type[ParamsModel], params: Mapping[str, Any]) -> ParamsModel:
    """Validate a strategy's `params`; problems become a 400 naming `params.<field>`."""
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"params.{where}: {first['msg']}", param=f"params.{where}") from exc
