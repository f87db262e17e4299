"""DeepConf with a scripted engine (pure logic): who is stopped where, who votes, the budget, the accounting.
The same strategy through the real engine and HTTP is in test_deepconf_http.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from service.runtime.budget import BudgetLimits, BudgetTracker
from service.runtime.cost import Hardware, ModelShape
from service.runtime.engine import Delta, Prompt, SamplingSpec, StreamState, TokenLogprob
from service.runtime.errors import InvalidRequest
from service.runtime.settings import Settings
from strategies import deepconf
from strategies.base import Result, Task
from verifiers.answers import AnswerSpec

SHAPE = ModelShape(parameters=1_000_000, layers=2, query_heads=2, kv_heads=1, head_dim=8)
HARDWARE = Hardware("test", 100.0, 1.0)


@dataclass
class Script:
    """One trace: its answer, and the confidence of each token (with k = 2, top-2 = [-0.01, -(2c - 0.01)])."""

    answer: str
    confidences: list[float]

    def tokens(self) -> list[str]:
        words = [f"w{i} " for i in range(len(self.confidences) - 1)]
        return [*words, f"The answer is {self.answer}."]


class ConfidenceEngine:
    """Hands out the scripts in order, one per sample; records how many tokens each call really produced
    and whether its stream was closed before its end (an abort)."""

    model_name = "scripted"
    max_model_len = 4096
    shape = SHAPE
    max_token_chars = 16

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = list(scripts)
        self.calls: list[dict[str, Any]] = []

    def render_chat(self, messages: Sequence[dict[str, Any]], tools: Any = None) -> str:
        return "".join(str(message["content"]) for message in messages)

    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join("x" for _ in token_ids)

    async def stream(self, prompt: Prompt, spec: SamplingSpec, state: StreamState) -> AsyncIterator[Delta]:
        state.prompt_tokens = 5
        call: dict[str, Any] = {
            "n": spec.n,
            "logprobs": spec.logprobs,
            "seed": spec.seed,
            "produced": 0,
            "aborted": False,
        }
        self.calls.append(call)
        scripts = [self.scripts.pop(0) for _ in range(spec.n)]
        try:
            for step in range(spec.max_tokens):
                for index, script in enumerate(scripts):
                    words = script.tokens()
                    if step >= len(words):
                        continue
                    await asyncio.sleep(0)
                    c = script.confidences[step]
                    top = (("a", -0.01), ("b", -(2 * c - 0.01)))
                    last = step == len(words) - 1 or step == spec.max_tokens - 1
                    call["produced"] += 1
                    yield Delta(
                        index,
                        words[step],
                        (step,),
                        ("stop" if step == len(words) - 1 else "length") if last else None,
                        (TokenLogprob("a", -0.01, top),),
                    )
        except GeneratorExit:
            call["aborted"] = True
            raise

    def running_requests(self) -> int:
        return 0

    async def check_health(self) -> None:
        return None

    async def close(self) -> None:
        return None


def task(params: dict[str, Any], max_tokens: int = 64, budget_given: bool = False) -> Task:
    return Task(
        prompt="q",
        question="q",
        params=params,
        sampling=SamplingSpec(max_tokens=max_tokens, seed=11),
        answer=AnswerSpec("number"),
        settings=Settings(),
        budget_given=budget_given,
    )


def solve(
    scripts: list[Script], params: dict[str, Any], tokens: int | None = None, max_tokens: int = 64
) -> tuple[Result, BudgetTracker, ConfidenceEngine]:
    engine = ConfidenceEngine(scripts)
    budget = BudgetTracker(BudgetLimits(tokens=tokens), SHAPE, HARDWARE)
    run = deepconf.run(task(params, max_tokens, budget_given=tokens is not None), engine, None, budget)
    result = asyncio.run(run)
    return result, budget, engine


STEADY = [3.0] * 10
WEAK_LATE = [3.0] * 4 + [0.5] * 6  # its window of tokens 4-5, (3.0 + 0.5) / 2, falls below 2.15


def test_online_stops_a_weak_trace_in_the_engine_and_charges_its_tokens() -> None:
    # warm-up: two answers, no consensus; threshold = 10th percentile of lowest group confidences
    warmup = [Script("4", [2.0] * 10), Script("5", [2.5] * 10), Script("4", STEADY), Script("5", STEADY)]
    online = [Script("7", WEAK_LATE), Script("4", STEADY)]
    result, budget, engine = solve(
        warmup + online,
        {"n": 6, "warmup": 4, "window": 2, "round_size": 2, "top_logprobs": 2, "keep_percent": 90},
    )
    details = result.details
    assert details["threshold"] == pytest.approx(2.0 + 0.3 * 0.5)
    # the warm-up is one call of 4; then one call per online trace, each asking for logprobs
    assert [call["n"] for call in engine.calls] == [4, 1, 1]
    assert all(call["logprobs"] == 2 for call in engine.calls)
    # a seeded request seeds every trace differently (one seed for all would draw the same trace again)
    assert [call["seed"] for call in engine.calls] == [11, 15, 16]
    weak = details["traces"][4]
    assert weak["finish_reason"] == "stopped" and weak["stopped_at"] == 5 and weak["tokens"] == 5
    assert weak["answer"] is None and not weak["voted"]
    assert engine.calls[1]["aborted"] and engine.calls[1]["produced"] == 5
    assert not engine.calls[2]["aborted"]
    # the warm-up and the trace that ran to its end vote: "4" (2.0 + 3.0 + 3.0) against "5" (2.5 + 3.0)
    assert [t["voted"] for t in details["traces"]] == [True, True, True, True, False, True]
    assert details["votes"] == {"4": 8.0, "5": 5.5}
    assert result.answer == "4"
    assert details["traces_stopped"] == 1 and budget.spend.engine_requests_stopped == 1
    # every token the engine produced is charged, the stopped trace's included
    assert budget.spend.completion_tokens == 4 * 10 + 5 + 10 == details["trace_tokens"]
    # had it run on, the stopped trace would have been as long as the finished ones (10 tokens)
    assert details["all_traces_tokens_estimate"] == 60 and details["tokens_saved_estimate"] == 5


def test_online_stops_sampling_at_consensus() -> None:
    scripts = [Script("4", STEADY) for _ in range(4)] + [Script("9", STEADY) for _ in range(12)]
    result, budget, engine = solve(scripts, {"n": 16, "warmup": 4, "window": 2, "top_logprobs": 2})
    assert result.answer == "4" and len(engine.calls) == 1
    details = result.details
    assert details["stopped_because"] == "consensus" and details["traces_drawn"] == 4
    assert details["consensus"] == 1.0
    assert budget.spend.completion_tokens == 40
    assert details["all_traces_tokens_estimate"] == 160 and details["saved_fraction_estimate"] == 0.75


def test_offline_keeps_the_confident_traces_and_weights_their_votes() -> None:
    # three unsure traces say 8, two sure ones say 6: majority would answer 8, confidence filtering 6
    scripts = [Script("8", [1.0] * 10) for _ in range(3)] + [Script("6", [4.0] * 10) for _ in range(2)]
    result, _, engine = solve(
        scripts, {"mode": "offline", "n": 5, "keep_percent": 40, "window": 2, "top_logprobs": 2}
    )
    assert result.answer == "6" and [call["n"] for call in engine.calls] == [5]
    assert [t["voted"] for t in result.details["traces"]] == [False, False, False, True, True]
    assert result.details["traces_stopped"] == 0
    assert [c.score for c in result.candidates] == pytest.approx([1.0] * 3 + [4.0] * 2)
    # keep everything and count votes: plain majority again
    result, _, _ = solve(
        [Script("8", [1.0] * 10) for _ in range(3)] + [Script("6", [4.0] * 10) for _ in range(2)],
        {"mode": "offline", "n": 5, "keep_percent": 100, "vote": "majority", "top_logprobs": 2},
    )
    assert result.answer == "8"


def test_the_token_budget_is_a_hard_cap() -> None:
    # no consensus ever; the budget pays for 7 traces of at most 10 tokens, not the 16 asked
    scripts = [Script(str(i % 3), STEADY) for i in range(32)]
    params = {"n": 16, "warmup": 4, "window": 2, "top_logprobs": 2}
    result, budget, engine = solve(scripts, params, tokens=75, max_tokens=10)
    assert budget.spend.completion_tokens <= 75
    assert result.params["n"] == 7 and result.details["traces_drawn"] == 7
    assert result.details["trace_tokens"] == budget.spend.completion_tokens == 70
    assert sum(call["n"] for call in engine.calls) == 7


@pytest.mark.parametrize(
    "params",
    [
        {"mode": "sideways"},
        {"keep_percent": 0},
        {"consensus": 0.3},
        {"window": 0},
        {"top_logprobs": 21},
        {"x": 1},
    ],
)
def test_invalid_params_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        solve([], params)
    assert (refused.value.param or "").startswith("params.")
