"""Auto: choose the strategy and its parameters per prompt, from a probe, a cost model and the verifier's ceiling.

1. Probe: k samples of the prompt (they join the final vote), scored by the verifier if there is one; drawn
   only when its expected value beats one best-of-N call without it (allocation/decide.py, value_of_probe),
   and skipped when similar past prompts already say how hard the prompt is.
2. Difficulty: the distribution of the per-sample success rate p given the probe (strategies/allocation).
3. Plans: every registered strategy with a plan builder or a measured profile, at every size the budget
   allows, each with predicted accuracy (closed forms or measured profiles) and predicted cost (Kinetics eFLOPs
   of its calls, seconds from the engine's fitted runtime model).
4. Decision: the highest expected utility within the hard cap (see allocation/decide.py); it may abstain.
5. Run: best-of-N continues from the probe's samples; other strategies run through the registry with the
   budget left. `Result.details["allocation"]` says what was estimated, chosen and spent, and why.

A request that names a corpus skips all this: the RAG allocation model picks its retrieval configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.runtime.budget import BudgetTracker
from service.runtime.cost import worst_case_eflops
from service.runtime.engine import Engine, count_prompt_tokens
from service.runtime.errors import BudgetExhausted
from service.runtime.load import read_load
from service.store import allocation as store
from strategies import rag
from strategies.allocation import costs, difficulty, neighbours
from strategies.allocation.costs import CallShape, SecondsModel
from strategies.allocation.decide import Decision, ProbeChoice, decide, value_of_probe
from strategies.allocation.load import LoadAdjustment, adjust
from strategies.allocation.plans import Caps, Plan, Situation, candidate_plans
from strategies.allocation.profiles import load_profiles
from strategies.base import Candidate, Result, Task, parse_params
from strategies.best_of_n import sample_candidates
from strategies.selection import select
from verifiers.base import Verifier

logger = logging.getLogger(__name__)

JUDGE_PROMPT_OVERHEAD = 60  # tokens the judge's instruction and template add around question and solution


class AutoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    probe_samples: int = Field(
        4, ge=1, le=16, description="Samples of the difficulty probe (they join the vote)."
    )
    probe: Literal["auto", "always"] = Field(
        "auto",
        description="auto: probe only when what the probe is expected to reveal is worth its cost (else one "
        "best-of-N call); always: probe first whenever the budget allows.",
    )
    false_positive_penalty: float = Field(
        0.0, ge=0, le=100, description="Cost of a wrong answer that is given (abstaining is worth 0)."
    )
    cost_weight: float = Field(
        0.1,
        ge=0,
        le=10,
        description="Utility a plan must buy per whole budget it spends (the saturation stop).",
    )
    family: str = Field(
        "default", min_length=1, max_length=64, description="Task family whose verifier calibration applies."
    )
    strategies: list[str] | None = Field(None, description="Restrict the choice to these strategies.")
    max_samples: int = Field(64, ge=1, le=1024, description="Largest best-of-N the allocator considers.")
    neighbours: bool = Field(
        True, description="Use outcomes of similar past prompts (embeddings in Redis) as a prior on p."
    )
    memory: str = Field(
        "default", min_length=1, max_length=64, description="Namespace of the past-outcome memory."
    )
    remember: bool = Field(True, description="Store this prompt's outcome for future neighbours.")
    load_aware: bool = Field(
        True,
        description="Read the engine's load (running and waiting sequences) and plan for it (see `goal`).",
    )
    goal: Literal["latency", "accuracy"] | None = Field(
        None,
        description="On a busy engine: `latency` shrinks plans by the predicted slowdown, `accuracy` only "
        "predicts their seconds on the load; default: the TTC_ALLOCATOR_GOAL setting.",
    )
    score_probe: bool | None = Field(
        None,
        description="Score the probe with the verifier; default: only when the verifier is calibrated and "
        "informative (c + s - 1 >= 0.3), since scoring costs as much as sampling here.",
    )


async def seconds_model(task: Task) -> SecondsModel:
    """The engine's fitted runtime model: Redis first (shared), then the cache dir, else defaults."""
    stored = await store.get_json(task.redis, costs.SECONDS_KEY)
    if stored:
        try:
            return SecondsModel(**stored)
        except TypeError:
            pass
    return costs.load_seconds_model_file(task.settings.model_cache_dir) or SecondsModel()


async def record_seconds(task: Task, rows: list[tuple[int, int, float, float]]) -> None:
    """Add measured calls to the shared observations and refit the runtime model (cheap: a 4-column lstsq)."""
    history = await store.push_json(
        task.redis, costs.OBSERVATIONS_KEY, [list(row) for row in rows], costs.MAX_OBSERVATIONS
    )
    if len(history) >= 4:
        model = SecondsModel.fit(history, "auto requests' measured calls")
        await store.set_json(task.redis, costs.SECONDS_KEY, model.__dict__)


def caps_of(budget: BudgetTracker) -> Caps:
    return Caps(budget.remaining_tokens(), budget.remaining_eflops(), budget.remaining_seconds())


def budget_scale(budget: BudgetTracker, prompt_tokens: int, max_tokens: int) -> float:
    """The eFLOPs the cost weight refers to: the request's eFLOPs cap, else the worst case of one call of as
    many samples as its token cap pays for (the whole budget spent at once)."""
    if budget.limits.eflops is not None:
        return budget.limits.eflops
    tokens = budget.limits.tokens or max_tokens * 16
    samples = max(tokens // max(max_tokens, 1), 1)
    return worst_case_eflops(
        budget.shape, budget.hardware, prompt_tokens, samples, max_tokens, budget.count_weight_loading
    )


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    from strategies import STRATEGIES  # the registry imports this module

    params = parse_params(AutoParams, task.params)
    if task.rag is not None:
        return await retrieval_plan(task, engine, verifier, budget)
    started = time.monotonic()
    prompt_tokens = count_prompt_tokens(engine, task.prompt)
    if budget.fit(prompt_tokens, 1, task.sampling.max_tokens) == (0, 0):
        raise BudgetExhausted("The budget cannot pay for a single sample of this prompt.", param="budget")
    calibration, model = await asyncio.gather(
        store.load_calibration(task.redis, verifier.name, params.family) if verifier is not None else _none(),
        seconds_model(task),
    )
    load = await read_load(engine) if params.load_aware else None
    adjustment = adjust(
        model, load, params.goal or task.settings.allocator_goal, prompt_tokens, task.sampling.max_tokens
    )

    # 1. Prior from similar past prompts; with enough of them, no probe at all (one engine call).
    vector: list[float] | None = None
    prior: neighbours.Prior | None = None
    if params.neighbours:
        try:
            vector = await neighbours.embed(task.question)
            prior = await neighbours.lookup(task.redis, params.memory, vector)
        except Exception as exc:  # the prior is an optimisation; never fail the request for it
            logger.warning("no neighbour prior: %r", exc)
    profiles = load_profiles(task.settings.allocator_profile_dir)
    score_probe = params.score_probe
    if score_probe is None:
        score_probe = (
            calibration is not None
            and calibration.source != "default"
            and (calibration.completeness + calibration.soundness - 1.0 >= 0.3)
        )
    allowed = set(params.strategies) if params.strategies is not None else None

    def situation_for(
        estimate: difficulty.Difficulty, probe_samples: int, expected_tokens: float
    ) -> Situation:
        verifier_call = None
        if verifier is not None:
            solution = int(expected_tokens)
            verifier_call = CallShape(prompt_tokens + solution + JUDGE_PROMPT_OVERHEAD, 1, 1.0, 1)
        return Situation(
            prompt_tokens=prompt_tokens,
            max_tokens=task.sampling.max_tokens,
            expected_tokens=expected_tokens,
            probe_samples=probe_samples,
            signature=estimate.signature,
            mixture=estimate.mixture,
            wrong_shares=estimate.wrong_shares,
            verifier=verifier.name if verifier is not None else None,
            calibration=calibration,
            verifier_call=verifier_call,
            probe_scored=verifier is not None and bool(score_probe),
            false_positive_penalty=params.false_positive_penalty,
            cost_weight=params.cost_weight,
            shape=budget.shape,
            hardware=budget.hardware,
            count_weight_loading=budget.count_weight_loading,
            seconds_model=adjustment.seconds_model,
            caps=adjustment.caps(caps_of(budget)),
            budget_scale=budget_scale(budget, prompt_tokens, task.sampling.max_tokens),
            max_samples=min(params.max_samples, task.settings.max_samples),
            profiles=profiles,
        )

    probe: list[Candidate] = []
    probe_seconds = 0.0
    probe_choice: ProbeChoice | None = None
    observations: list[tuple[int, int, float, float]] = []
    # Skip the probe only when the budget can pay a full-length sample: under a tighter cap no plan of whole
    # samples fits, and the probe (which shortens its samples to fit) is the only way to answer at all.
    full_sample_fits = budget.fit(prompt_tokens, 1, task.sampling.max_tokens)[1] == task.sampling.max_tokens
    guessed_tokens = (prior.tokens if prior is not None else None) or task.sampling.max_tokens / 2
    fit_set = profiles.get("best_of_n")
    if prior is not None and prior.confident and full_sample_fits:
        estimate = difficulty.from_prior(prior.alpha, prior.beta, prior.neighbours)
        expected_tokens = guessed_tokens
    else:
        if (
            params.probe == "auto"
            and full_sample_fits
            and fit_set is not None
            and fit_set.probe_size == params.probe_samples
            and (allowed is None or "best_of_n" in allowed)
        ):
            blind = difficulty.population(fit_set)
            probe_choice = value_of_probe(
                situation_for(blind, 0, guessed_tokens),
                fit_set,
                params.probe_samples,
                set(STRATEGIES),
                allowed,
            )
        if probe_choice is not None and not probe_choice.probe:
            estimate, expected_tokens = blind, guessed_tokens
        else:
            # 2. Probe.
            probe_size, _ = budget.fit(prompt_tokens, params.probe_samples, task.sampling.max_tokens)
            probe_size = max(probe_size, 1)
            probe_started = time.monotonic()
            probe = await sample_candidates(
                task, engine, verifier if score_probe else None, budget, probe_size
            )
            probe_seconds = time.monotonic() - probe_started
            expected_tokens = (
                sum(c.tokens for c in probe) / max(len(probe), 1) or task.sampling.max_tokens / 2
            )
            observations.append((prompt_tokens, len(probe), expected_tokens, probe_seconds))
            task.report({"event": "probe", "samples": len(probe), "answers": [c.answer for c in probe]})
            estimate = difficulty.estimate(
                probe,
                fit_set,
                calibration,
                prior=(prior.alpha, prior.beta) if prior is not None else None,
            )
    probe_eflops = budget.spend.eflops

    # 3-4. Plans and decision.
    if probe_choice is not None and not probe_choice.probe:
        # Decided already, before any sample: best-of-N in one call (other strategies' profiles are measured
        # per probe outcome). Nothing was spent since, so the budget left is the same.
        situation, decision = probe_choice.blind, probe_choice.without_probe
    else:
        situation = situation_for(estimate, len(probe), expected_tokens)
        decision = decide(situation, candidate_plans(situation, set(STRATEGIES), allowed))
    load_blind: dict[str, Any] | None = None
    if adjustment.active:  # what the same decision would have been on an idle engine
        idle = replace(situation, seconds_model=model, caps=caps_of(budget))
        load_blind = decide(idle, candidate_plans(idle, set(STRATEGIES), allowed)).chosen.describe()
    if probe_choice is not None:
        decision.reason = f"{probe_choice.reason} {decision.reason}"
    chosen = decision.chosen
    task.report({"event": "allocation", "chosen": chosen.describe(), "reason": decision.reason})

    # 5. Run the plan.
    plan_started = time.monotonic()
    spent_before = budget.spend.eflops
    result = await execute(task, engine, verifier, budget, chosen, probe, STRATEGIES)
    plan_seconds = time.monotonic() - plan_started
    for call in chosen.calls:
        if call.samples and chosen.strategy == "best_of_n":
            lengths = [c.tokens for c in result.candidates[len(probe) :]]
            mean = sum(lengths) / len(lengths) if lengths else expected_tokens
            observations.append((prompt_tokens, call.samples, mean, plan_seconds))
    await record_seconds(task, observations)

    result.details["allocation"] = allocation_report(
        situation,
        estimate,
        calibration,
        decision,
        probe,
        probe_eflops,
        probe_seconds,
        budget.spend.eflops - spent_before,
        plan_seconds,
        time.monotonic() - started,
        budget,
        prior,
        probe_choice,
    )
    result.details["allocation"]["load"] = load_report(adjustment, decision.chosen.describe(), load_blind)
    if not params.load_aware:
        result.details["allocation"]["load"]["source"] = "not read: params.load_aware is false"
    result.params = {"strategy": chosen.strategy, **chosen.params, "probe_samples": len(probe)}
    if params.remember and vector is not None and probe:
        # What the probe measured, as p (through the profile's map from agreement to success rate): the raw
        # agreement share would tell later prompts that a model which agrees on a wrong answer is right.
        # Without a probe there is nothing new to remember.
        measured = difficulty.estimate(probe, fit_set, calibration).p  # no prior: no echo
        await neighbours.remember(task.redis, params.memory, vector, measured, expected_tokens)
    return result


def load_report(
    adjustment: LoadAdjustment, chosen: dict[str, Any], load_blind: dict[str, Any] | None
) -> dict[str, Any]:
    """What the engine's load was and what it changed: the plan chosen against the idle-engine choice."""
    report = adjustment.describe()
    if load_blind is None:
        report["changed"] = "nothing: the engine was idle" if adjustment.load is not None else "nothing"
        return report
    same = (load_blind["strategy"], load_blind["params"]) == (chosen["strategy"], chosen["params"])
    report["idle_engine_choice"] = {k: load_blind[k] for k in ("strategy", "params", "predicted_seconds")}
    report["changed"] = (
        "nothing: the same plan as on an idle engine"
        if same
        else f"{chosen['strategy']} {chosen['params']} instead of {load_blind['strategy']} {load_blind['params']}"
    )
    return report


async def retrieval_plan(
    task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker
) -> Result:
    """A request that names a corpus is a retrieval question: its configuration (documents, demonstrations,
    follow-up rounds) comes from the RAG allocation model fitted by loadtests/rag.py, for its context budget."""
    result = await rag.run(task, engine, verifier, budget)
    chosen = result.details.get("allocation", {})
    params = {key: chosen.get(key) for key in ("k", "demos", "iterations")}
    result.details["allocation"] = {
        "chosen": {
            "strategy": "rag",
            "params": params,
            "predicted_accuracy": chosen.get("predicted"),
            "measured_accuracy": chosen.get("measured"),
            "basis": f"RAG allocation model (strategies/rag_allocation.json), {chosen.get('basis')}",
        },
        "cost": {"spent_eflops": budget.spend.eflops, "budget_context_tokens": budget.limits.context_tokens},
        "reason": "The request names a corpus, so the RAG allocation model chose its documents, demonstrations "
        "and follow-up rounds: the best measured configuration that fits the context budget.",
    }
    return result


async def _none() -> None:
    return None


async def execute(
    task: Task,
    engine: Engine,
    verifier: Verifier | None,
    budget: BudgetTracker,
    plan: Plan,
    probe: list[Candidate],
    registry: dict[str, Any],
) -> Result:
    """Run the chosen plan. Best-of-N adds samples to the probe's; others run through the registry."""
    if plan.strategy == "abstain":
        return Result(text="", answer=None, candidates=probe, params={}, abstained=True)
    if plan.strategy == "best_of_n":
        candidates = list(probe)
        if plan.uses_verifier and verifier is not None and any(c.score is None for c in probe):
            with contextlib.suppress(BudgetExhausted):
                scores = await verifier.score(task.question, [c.text for c in probe])
                for candidate, score in zip(probe, scores, strict=False):
                    candidate.score = score
        extra = plan.samples - len(probe)
        if extra > 0 and not budget.expired():
            with contextlib.suppress(BudgetExhausted):
                candidates += await sample_candidates(
                    task, engine, verifier if plan.uses_verifier else None, budget, extra
                )
        selection = plan.params["selection"]
        chosen = select(candidates, selection)
        threshold = plan.params.get("abstain_below")
        abstained = chosen is None or (threshold is not None and (chosen.score or 0.0) < threshold)
        return Result(
            text=chosen.text if chosen else "",
            answer=None if abstained or chosen is None else chosen.answer,
            candidates=candidates,
            params={},
            abstained=abstained,
        )
    strategy = registry[plan.strategy]
    result: Result = await strategy(
        replace(task, params=plan.params), engine, verifier if plan.uses_verifier else None, budget
    )
    result.candidates = result.candidates + probe
    return result


def allocation_report(
    situation: Situation,
    estimate: difficulty.Difficulty,
    calibration: store.VerifierCalibration | None,
    decision: Decision,
    probe: list[Candidate],
    probe_eflops: float,
    probe_seconds: float,
    plan_eflops: float,
    plan_seconds: float,
    total_seconds: float,
    budget: BudgetTracker,
    prior: neighbours.Prior | None,
    probe_choice: ProbeChoice | None,
) -> dict[str, Any]:
    """The allocation object: what was estimated, what was chosen over what, predicted against spent."""
    chosen = decision.chosen
    verifier_part: dict[str, Any] | None = None
    if calibration is not None:
        from strategies.allocation.formulas import ceiling

        verifier_part = {
            "name": calibration.verifier,
            "family": calibration.family,
            "completeness": calibration.completeness,
            "soundness": calibration.soundness,
            "calibration": calibration.source,
            "ceiling": round(
                sum(
                    w * ceiling(r, calibration.completeness, calibration.soundness)
                    for w, r in estimate.mixture
                ),
                4,
            ),
        }
        if calibration.source == "default":
            verifier_part["note"] = (
                "not calibrated: conservative defaults (POST /v1/verifiers/{name}/calibrate)"
            )
    predicted_total = probe_eflops + chosen.eflops
    spent_total = budget.spend.eflops
    return {
        "difficulty": {
            "p": round(estimate.p, 4),
            "bin": estimate.bin,
            "bin_name": estimate.bin_name,
            "probe_samples": len(probe),
            "probe_agreement": f"{estimate.signature}/{len(probe)}" if probe else None,
            "neighbour_prior": None
            if prior is None
            else {
                "neighbours": prior.neighbours,
                "near_duplicates": prior.near_duplicates,
                "mean_similarity": round(prior.mean_similarity, 3),
                "p": round(prior.p, 4),
                "skipped_probe": not probe,
            },
            "source": estimate.source,
            "probe_decision": None
            if probe_choice is None
            else {
                "probed": probe_choice.probe,
                "expected_score_with_probe": round(probe_choice.expected_score_with, 4),
                "best_score_without_probe": round(probe_choice.score_without, 4),
            },
        },
        "verifier": verifier_part,
        "chosen": chosen.describe(),
        "runners_up": [plan.describe() for plan in decision.runners_up],
        "plans_considered": decision.considered,
        "plans_within_budget": decision.feasible,
        "cost": {
            "predicted_eflops": predicted_total,
            "spent_eflops": spent_total,
            "eflops_ratio": costs.ratio(predicted_total, spent_total),
            "probe_eflops": probe_eflops,
            "plan_predicted_eflops": chosen.eflops,
            "plan_spent_eflops": plan_eflops,
            "predicted_seconds": round(probe_seconds + chosen.seconds, 3),
            "spent_seconds": round(total_seconds, 3),
            "plan_predicted_seconds": round(chosen.seconds, 3),
            "plan_spent_seconds": round(plan_seconds, 3),
            "seconds_model": situation.seconds_model.source,
            "budget_eflops": budget.limits.eflops,
            "budget_tokens": budget.limits.tokens,
            "spent_tokens": budget.spend.completion_tokens,
        },
        "false_positive_penalty": situation.false_positive_penalty,
        "reason": decision.reason,
    }
