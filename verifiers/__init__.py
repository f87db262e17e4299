"""Verifiers, found by name. Each is built per request with that request's options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine
from service.runtime.errors import InvalidRequest
from service.runtime.settings import RewardModelEndpoint
from verifiers.answers import AnswerSpec
from verifiers.base import Verifier
from verifiers.calculator import CalculatorOptions, CalculatorVerifier
from verifiers.judge import JudgeVerifier
from verifiers.process_judge import ProcessJudgeOptions, ProcessJudgeVerifier
from verifiers.reference import ReferenceVerifier
from verifiers.reward_model import RewardModelOptions, RewardModelVerifier
from verifiers.steps import parse_options

VERIFIER_NAMES = ("judge", "reference", "process_judge", "calculator", "reward_model")


def build_verifier(
    name: str,
    options: dict[str, Any],
    engine: Engine,
    budget: BudgetTracker,
    answer: AnswerSpec,
    reward_models: Mapping[str, RewardModelEndpoint] | None = None,
) -> Verifier:
    """The named verifier with the request's options; a clear 400 for unknown names or options."""
    if name == "reference":
        reference = options.get("answer")
        if (
            not isinstance(reference, (str, int, float))
            or isinstance(reference, bool)
            or str(reference) == ""
        ):
            raise InvalidRequest(
                "The reference verifier needs the known answer: verifier.answer.", param="verifier.answer"
            )
        return ReferenceVerifier(str(reference), answer)
    if name == "judge":
        max_tokens = options.get("max_solution_tokens", 512)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 16 <= max_tokens <= 8192:
            raise InvalidRequest(
                "verifier.max_solution_tokens must be an integer in [16, 8192].",
                param="verifier.max_solution_tokens",
            )
        return JudgeVerifier(engine, budget, max_tokens)
    # Process verifiers: score partial solutions step by step (options validated by their pydantic models).
    if name == "process_judge":
        return ProcessJudgeVerifier(engine, budget, parse_options(ProcessJudgeOptions, options, name))
    if name == "calculator":
        return CalculatorVerifier(parse_options(CalculatorOptions, options, name))
    if name == "reward_model":
        reward_options = parse_options(RewardModelOptions, options, name)
        registered = reward_models or {}
        endpoint = registered.get(reward_options.model)
        if endpoint is None:
            known = ", ".join(sorted(registered)) or "none (the operator registers them in TTC_REWARD_MODELS)"
            raise InvalidRequest(
                f"Unknown reward model {reward_options.model!r}; the registered ones are: {known}.",
                param="verifier.model",
            )
        return RewardModelVerifier(reward_options, endpoint, budget)
    raise InvalidRequest(
        f"Unknown verifier {name!r}; the verifiers are: {', '.join(VERIFIER_NAMES)}.", param="verifier.name"
    )


__all__ = ["VERIFIER_NAMES", "AnswerSpec", "Verifier", "build_verifier"]
