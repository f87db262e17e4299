"""Reward-model client: a process (PRM) or outcome (ORM) reward model served by vLLM's pooling API, as
production deployments run them (e.g. Qwen2.5-Math-PRM-7B behind `vllm serve --runner pooling`).

PRM: the question and the steps are rendered with the model's chat template through the server's
`/tokenize`, each step followed by the separator token (Qwen's `<extra_0>`); `/pooling` with
task `token_classify` returns class probabilities per token, and a step's score is the probability of the
last class ("correct") at its separator. ORM: `/classify` on the rendered conversation, one score per
candidate.

Reward models are registered by the operator (`TTC_REWARD_MODELS`: name -> url, model, mode); a request
names one and never gives an address. Every failure of the server (refused, timed out, an error status,
a body that is not the JSON vLLM sends) is an UpstreamError (502) naming the registered reward model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import Field

from service.runtime.budget import BudgetTracker
from service.runtime.concurrency import gather_or_cancel
from service.runtime.errors import InvalidRequest, UpstreamError
from service.runtime.settings import RewardModelEndpoint
from verifiers.steps import StepOptions, aggregate, split_steps


class RewardModelOptions(StepOptions):
    model: str = Field(
        ..., min_length=1, max_length=256, description="A reward model registered in TTC_REWARD_MODELS."
    )
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

    def __init__(
        self, options: RewardModelOptions, endpoint: RewardModelEndpoint, budget: BudgetTracker | None = None
    ) -> None:
        self.options = options
        self.endpoint = endpoint
        self.budget = budget
        self.base = str(endpoint.url).rstrip("/")
        self.label = f"The reward model {options.model!r}"  # the registered name; its URL stays private

    def _failed(self, what: str) -> UpstreamError:
        return UpstreamError(f"{self.label} {what}", param="verifier.model")

    async def _post(self, http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await http.post(f"{self.base}{path}", json=body)
        except httpx.HTTPError as error:
            raise self._failed(f"did not answer {path}: {type(error).__name__}") from error
        if response.status_code != 200:
            raise self._failed(f"answered {path} with {response.status_code}: {response.text[:300]!r}")
        try:
            return response.json()
        except ValueError as error:
            raise self._failed(f"sent no JSON for {path}: {response.text[:100]!r}") from error

    async def _read(self, http: httpx.AsyncClient, path: str, body: dict[str, Any], read: Any) -> Any:
        """POST, then `read(result)`; a result without the fields vLLM sends is the upstream's fault."""
        result = await self._post(http, path, body)
        try:
            return read(result)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise self._failed(
                f"sent an unexpected body for {path} ({type(error).__name__}: {error}): {str(result)[:200]!r}"
            ) from error

    def _count_call(self, inputs: list[list[int]]) -> None:
        """Report the call in `usage`; its tokens run on the reward model's server, so no cap applies."""
        if self.budget is not None:
            self.budget.spend.verifier_requests += 1
            self.budget.spend.reward_model_tokens += sum(len(ids) for ids in inputs)

    async def _render(self, http: httpx.AsyncClient, question: str, steps: Sequence[str]) -> list[int]:
        """Token ids of the conversation, each step followed by the separator in PRM mode."""
        if self.endpoint.mode == "prm":
            answer = "".join(step + self.options.separator for step in steps)
        else:
            answer = "\n\n".join(steps)
        body: dict[str, Any] = {"model": self.endpoint.model}
        if self.options.chat:
            messages = [{"role": "system", "content": self.options.system}] if self.options.system else []
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            body.update(messages=messages, add_generation_prompt=False)
        else:
            body.update(prompt=f"{question}\n\n{answer}")
        tokens: list[int] = await self._read(
            http, "/tokenize", body, lambda result: [int(token) for token in result["tokens"]]
        )
        return tokens

    async def _separator_id(self, http: httpx.AsyncClient) -> int:
        body = {"model": self.endpoint.model, "prompt": self.options.separator, "add_special_tokens": False}
        tokens: list[int] = await self._read(
            http, "/tokenize", body, lambda result: [int(token) for token in result["tokens"]]
        )
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
        body = {"model": self.endpoint.model, "input": inputs, "task": "token_classify"}

        def read(result: Any) -> list[list[float]]:
            scores: list[list[float]] = []
            for ids, item in zip(inputs, sorted(result["data"], key=lambda row: row["index"]), strict=True):
                rows = item["data"]
                if len(rows) != len(ids):
                    raise ValueError(
                        f"scored {len(rows)} tokens of {len(ids)}; is it serving token_classify?"
                    )
                scores.append(
                    [probability_of_correct(rows[at]) for at, token in enumerate(ids) if token == separator]
                )
            return scores

        scores: list[list[float]] = await self._read(http, "/pooling", body, read)
        self._count_call(inputs)
        return scores

    async def _orm_scores(self, http: httpx.AsyncClient, inputs: list[list[int]]) -> list[float]:
        scores: list[float] = await self._read(
            http,
            "/classify",
            {"model": self.endpoint.model, "input": inputs},
            lambda result: [
                probability_of_correct(row["probs"])
                for row in sorted(result["data"], key=lambda r: r["index"])
            ],
        )
        self._count_call(inputs)
        return scores

    async def step_scores(self, question: str, candidates: Sequence[str]) -> list[list[float]]:
        """Per candidate, the PRM's score at each step (ORM: one score for the whole candidate)."""
        if not candidates:
            return []
        steps = [split_steps(text, self.options.delimiter) for text in candidates]
        async with httpx.AsyncClient(timeout=self.options.timeout) as http:
            inputs = list(await gather_or_cancel(*(self._render(http, question, each) for each in steps)))
            if self.endpoint.mode == "orm":
                return [[score] for score in await self._orm_scores(http, inputs)]
            return await self._prm_scores(http, inputs)

    async def score(self, question: str, candidates: Sequence[str]) -> list[float]:
        per_step = await self.step_scores(question, candidates)
        return [aggregate(scores, self.options.aggregate) for scores in per_step]
