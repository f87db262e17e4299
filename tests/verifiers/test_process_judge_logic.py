"""Which steps the process judge asks about, and how it combines the answers (a scripted engine that says
Yes unless the latest step contains "wrong"; pure logic — the real engine is tested in test_process_judge)."""

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from service.runtime.budget import BudgetLimits, BudgetTracker
from service.runtime.cost import Hardware, ModelShape
from service.runtime.engine import Delta, Prompt, SamplingSpec, StreamState, TokenLogprob
from verifiers.process_judge import ProcessJudgeOptions, ProcessJudgeVerifier
from verifiers.steps import Aggregate

SHAPE = ModelShape(parameters=1_000_000, layers=2, query_heads=2, kv_heads=1, head_dim=8)


class YesNoEngine:
    model_name = "yes-no"
    max_model_len = 4096
    shape = SHAPE

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def render_chat(self, messages: Sequence[dict[str, Any]]) -> str:
        return "".join(str(message["content"]) for message in messages)

    def encode(self, text: str) -> list[int]:
        return [ord(char) for char in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(token) for token in token_ids)

    async def stream(self, prompt: Prompt, spec: SamplingSpec, state: StreamState) -> AsyncIterator[Delta]:
        assert isinstance(prompt, str) and spec.logprobs and spec.temperature == 0.0
        self.prompts.append(prompt)
        state.prompt_tokens = len(prompt)
        latest = prompt.rsplit("Latest step:\n", 1)[1]
        yes = 0.2 if "wrong" in latest else 0.8
        top = (("Yes", math.log(yes)), ("No", math.log(1 - yes)))
        yield Delta(0, top[0][0], (1,), "length", (TokenLogprob(top[0][0], top[0][1], top),))

    def running_requests(self) -> int:
        return 0

    async def check_health(self) -> None:
        return None

    async def close(self) -> None:
        return None


def judge(engine: YesNoEngine, how: Aggregate, **options: Any) -> tuple[ProcessJudgeVerifier, BudgetTracker]:
    budget = BudgetTracker(BudgetLimits(), SHAPE, Hardware("test", 100.0, 1.0), count_weight_loading=True)
    return ProcessJudgeVerifier(engine, budget, ProcessJudgeOptions(aggregate=how, **options)), budget


CANDIDATES = ["2 + 2 = 4\n\nthis step is wrong\n\nso 5", "one step", ""]


@pytest.mark.parametrize(
    ("how", "calls", "expected"),
    [("last", 2, [0.8, 0.8, 0.5]), ("min", 4, [0.2, 0.8, 0.5]), ("product", 4, [0.8 * 0.2 * 0.8, 0.8, 0.5])],
)
def test_judged_steps_and_aggregation(how: Aggregate, calls: int, expected: list[float]) -> None:
    engine = YesNoEngine()
    verifier, budget = judge(engine, how)
    scores = asyncio.run(verifier.score("What is 2 + 2?", CANDIDATES))
    assert scores == pytest.approx(expected)
    assert len(engine.prompts) == calls and budget.spend.verifier_requests == calls


def test_the_prompt_holds_question_earlier_steps_and_latest_step() -> None:
    engine = YesNoEngine()
    verifier, _ = judge(engine, "last")
    asyncio.run(verifier.score("Q?", ["a\n\nb\n\nc"]))
    [prompt] = engine.prompts
    assert (
        "Question: Q?" in prompt and "Earlier steps:\na\n\nb" in prompt and prompt.endswith("Latest step:\nc")
    )


def test_earlier_steps_are_cut_from_the_front() -> None:
    engine = YesNoEngine()
    verifier, _ = judge(engine, "last", max_solution_tokens=16)
    asyncio.run(verifier.score("Q?", ["x" * 40 + "TAIL\n\nlast"]))
    assert "x" * 12 + "TAIL" in engine.prompts[0] and "x" * 13 not in engine.prompts[0]
