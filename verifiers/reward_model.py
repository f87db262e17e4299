"""Reward-model client: a process (PRM) or outcome (ORM) reward model served by vLLM's pooling API, as
production deployments run them (e.g. Qwen2.5-Math-PRM-7B behind `vllm serve --runner pooling`).

PRM: the question and the steps are rendered with the model's chat template through the server's
`/tokenize`, each step followed by the separator token (Qwen's `<extra_0>`); `/pooling` with
task `token_classify` returns class probabilities per token, and a step's score is the probability of the
last class ("correct") at its separator. ORM: `/classify` on the rendered conversation, one score per
candidate. Every failure of the server (refused, timed out, an error status) is EngineUnavailable (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

import httpx
from pydantic import Field, HttpUrl

from service.runtime.budget import BudgetTracker
from service.runtime.errors import EngineUnavailable, InvalidRequest
from verifiers.steps import StepOptions, aggregate, split_steps


class RewardModelOptions(StepOptions):
    url: HttpUrl = Field(..., description="Base URL of the vLLM pooling server, e.g. http://127.0.0.1:8001.")
    model: str = Field(..., min_length=1, max_length=256, description="Served model name.")
    mode: Literal["prm", "orm"] = Field("prm", description="prm: per-step token scores; orm: one score.")
    separator: str = Field(
        "<extra_0>",
        min_length=1,
        max_length=64,
        description="PRM step separator: one token of its vocabulary.",
    )
    system: str | None = Field(None, max_length=4000, description="System message for the chat template.")
    chat: bool = Field(True, description="Render with the model's chat template (else question, then steps).")
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds allowed for each HTTP call.")


def probability_of_correct(probs: Sequence[float] | float) -> float:
    """The last class's probability ("correct" for two-class heads); a one-class head's value itself."""
    value = probs if isinstance(probs, (int, float)) else probs[-1]
    return min(1.0, max(0.0, float(value)))


class RewardModelVerifier:
    name = "reward_model"

    def __init__(self, options: RewardModelOptions, budget: BudgetTracker | None = None) -> None:
        self.options = options
        self.budget = budget
        self.base = str(options.url).rstrip("/")

    async def _post(self, http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await http.post(f"{self.base}{path}", json=body)
        except httpx.HTTPError as error:
            raise EngineUnavailable(
                f"The reward model at {self.base} did not answer {path}: {type(error).__name__} {error}"
            ) from error
        if response.status_code != 200:
            raise EngineUnavailable(
                f"The reward model at {self.base} answered {path} with {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            return response.json()
        except ValueError as error:
            raise EngineUnavailable(f"The reward model at {self.base} sent no JSON for {path}.") from error

    def _count_call(self, inputs: list[list[int]]) -> None:
        """Report the call in `usage`; its tokens run on the reward model's server, so no cap applies."""
        if self.budget is not None:
            self.budget.spend.verifier_requests += 1
            self.budget.spend.reward_model_tokens += sum(len(ids) for ids in inputs)

    async def _render(self, http: httpx.AsyncClient, question: str, steps: Sequence[str]) -> list[int]:
        """Token ids of the conversation, each step followed by the separator in PRM mode."""
        if self.options.mode == "prm":
            answer = "".join(step + self.options.separator for step in steps)
        else:
            answer = "\n\n".join(steps)
        body: dict[str, Any] = {"model": self.options.model}
        if self.options.chat:
            messages = [{"role": "system", "content": self.options.system}] if self.options.system else []
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            body.update(messages=messages, add_generation_prompt=False)
        else:
            body.update(prompt=f"{question}\n\n{answer}")
        result = await self._post(http, "/tokenize", body)
        return [int(token) for token in result["tokens"]]

    async def _separator_id(self, http: httpx.AsyncClient) -> int:
        body = {"model": self.options.model, "prompt": self.options.separator, "add_special_tokens": False}
        tokens = (await self._post(http, "/tokenize", body))["tokens"]
        if len(tokens) != 1:
            raise InvalidRequest(
                f"verifier.separator {self.options.separator!r} is {len(tokens)} tokens for {self.options.model};"
                " a PRM separator must be exactly one token.",
                param="verifier.separator",
            )
        return int(tokens[0])

    async def _prm_scores(self, http: httpx.AsyncClient, inputs: list[list[int]]) -> list[list[float]]:
        """Per candidate, the score at each of its separator tokens."""
        separator = await self._separator_id(http)
        body = {"model": self.options.model, "input": inputs, "task": "token_classify"}
        result = await self._post(http, "/pooling", body)
        self._count_call(inputs)
        scores: list[list[float]] = []
        for ids, item in zip(inputs, sorted(result["data"], key=lambda row: row["index"]), strict=True):
            rows = item["data"]
            if len(rows) != len(ids):
                raise EngineUnavailable(
                    f"The reward model at {self.base} scored {len(rows)} tokens of {len(ids)}; "
                    "is it serving token_classify?"
                )
            scores.append(
                [probability_of_correct(rows[at]) for at, token in enumerate(ids) if token == separator]
            )
        return scores

    async def _orm_scores(self, http: httpx.AsyncClient, inputs: list[list[int]]) -> list[float]:
        result = await self._post(http, "/classify", {"model": self.options.model, "input": inputs})
        self._count_call(inputs)
        return [
            probability_of_correct(row["probs"]) for row in sorted(result["data"], key=lambda r: r["index"])
        ]

    async def step_scores(self, question: str, candidates: Sequence[str]) -> list[list[float]]:
        """Per candidate, the PRM's score at each step (ORM: one score for the whole candidate)."""
        if not candidates:
            return []
        steps = [split_steps(text, self.options.delimiter) for text in candidates]
        async with httpx.AsyncClient(timeout=self.options.timeout) as http:
            inputs = list(await asyncio.gather(*(self._render(http, question, each) for each in steps)))
            if self.options.mode == "orm":
                return [[score] for score in await self._orm_scores(http, inputs)]
            return await self._prm_scores(http, inputs)

    async def score(self, question: str, candidates: Sequence[str]) -> list[float]:
        per_step = await self.step_scores(question, candidates)
        return [aggregate(scores, self.options.aggregate) for scores in per_step]
