"""The budget allocator's resources: verifier calibration, the engine's runtime model, what `auto` knows.

POST /v1/verifiers/{name}/calibrate   measure c and s of a verifier on labelled examples (stored in Redis)
POST /v1/allocator/calibrate-engine   time a few engine calls and fit the seconds model (stored)
GET  /v1/allocator                    cost model, runtime model, profiles and calibrations in force

Both calibrations keep the engine busy for minutes: they run under a budget (the request's, capped by
TTC_MAX_CALIBRATION_TOKENS and TTC_MAX_CALIBRATION_SECONDS) and stop their engine work when the client
disconnects, like every other route.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from service.api.protocol import (
    BudgetSpec,
    CalibrateVerifierRequest,
    EngineCalibrationRequest,
    VerifierCalibrationOut,
)
from service.api.state import ServiceState, StateDep, cancel_on_disconnect
from service.runtime.budget import BudgetLimits, BudgetTracker
from service.runtime.engine import SamplingSpec, count_prompt_tokens
from service.runtime.errors import BudgetExhausted, InvalidRequest
from service.runtime.settings import Settings
from service.store import allocation as store
from strategies.allocation import costs
from strategies.allocation.calibrate import calibration_of, measure
from strategies.allocation.profiles import load_profiles
from verifiers import VERIFIER_NAMES
from verifiers.answers import AnswerSpec

router = APIRouter(prefix="/v1")

CALIBRATION_PROMPT = "Write a long story about a lighthouse keeper and a storm."


def calibration_limits(budget: BudgetSpec | None, settings: Settings) -> BudgetLimits:
    """The request's caps, each axis bounded by the service's calibration caps (a 400 above them)."""
    budget = budget or BudgetSpec()
    if budget.tokens is not None and budget.tokens > settings.max_calibration_tokens:
        raise InvalidRequest(
            f"budget.tokens may be at most {settings.max_calibration_tokens} for a calibration.",
            param="budget.tokens",
        )
    if budget.seconds is not None and budget.seconds > settings.max_calibration_seconds:
        raise InvalidRequest(
            f"budget.seconds may be at most {settings.max_calibration_seconds} for a calibration.",
            param="budget.seconds",
        )
    return BudgetLimits(
        tokens=budget.tokens or settings.max_calibration_tokens,
        eflops=budget.eflops,
        seconds=budget.seconds or settings.max_calibration_seconds,
        context_tokens=budget.context_tokens,
    )


def calibration_budget(state: ServiceState, budget: BudgetSpec | None) -> BudgetTracker:
    engine, hardware = state.require_engine()
    limits = calibration_limits(budget, state.settings)
    return BudgetTracker(limits, engine.shape, hardware, state.settings.count_weight_loading)


@router.post(
    "/verifiers/{name}/calibrate",
    response_model=VerifierCalibrationOut,
    summary="Measure a verifier's completeness and soundness on labelled examples",
)
async def calibrate_verifier(
    name: Annotated[str, Path(description="A verifier name.", json_schema_extra={"enum": [*VERIFIER_NAMES]})],
    body: CalibrateVerifierRequest,
    request: Request,
    state: StateDep,
) -> VerifierCalibrationOut:
    if name not in VERIFIER_NAMES:
        raise InvalidRequest(
            f"Unknown verifier {name!r}; the verifiers are: {', '.join(VERIFIER_NAMES)}.", param="name"
        )
    engine, _ = state.require_engine()
    budget = calibration_budget(state, body.budget)
    sampling = SamplingSpec(
        temperature=body.sampling.temperature,
        top_p=body.sampling.top_p,
        max_tokens=body.sampling.max_tokens,
        stop=tuple(body.sampling.stop),
    )
    measuring = measure(
        engine=engine,
        settings=state.settings,
        budget=budget,
        verifier_name=name,
        options=body.options,
        examples=[(example.question, example.answer) for example in body.examples],
        samples=body.samples_per_question,
        sampling=sampling,
        answer=AnswerSpec(body.answer.type, body.answer.pattern),
        threshold=body.threshold,
    )
    counts = await cancel_on_disconnect(request, measuring)
    calibration = calibration_of(name, body.family, counts, body.threshold)
    await store.save_calibration(state.redis, calibration)
    return VerifierCalibrationOut(**calibration.describe())


@router.post("/allocator/calibrate-engine", summary="Time engine calls and fit the runtime model auto uses")
async def calibrate_engine(
    body: EngineCalibrationRequest, request: Request, state: StateDep
) -> dict[str, Any]:
    engine, _ = state.require_engine()
    budget = calibration_budget(state, body.budget)
    prompt = engine.render_chat([{"role": "user", "content": CALIBRATION_PROMPT}])
    prompt_tokens = await asyncio.to_thread(count_prompt_tokens, engine, prompt)

    async def sweep() -> list[tuple[int, int, float, float]]:
        """Timed calls, each paid in full by the budget (a shrunk call would time something else)."""
        rows: list[tuple[int, int, float, float]] = []
        for max_tokens in body.max_tokens:
            for samples in body.batch_sizes:
                if budget.fit(prompt_tokens, samples, max_tokens) != (samples, max_tokens):
                    return rows
                spec = SamplingSpec(n=samples, temperature=1.0, max_tokens=max_tokens)
                started = time.monotonic()
                generation = await budget.generate(engine, prompt, spec, prompt_tokens=prompt_tokens)
                seconds = time.monotonic() - started
                mean = generation.completion_tokens / max(len(generation.samples), 1)
                rows.append((prompt_tokens, len(generation.samples), mean, seconds))
        return rows

    rows = await cancel_on_disconnect(request, sweep())
    if not rows:
        raise BudgetExhausted("The budget cannot pay for the sweep's first timed call.", param="budget")
    history = await store.push_json(
        state.redis, costs.OBSERVATIONS_KEY, [list(row) for row in rows], costs.MAX_OBSERVATIONS
    )
    fitted = costs.SecondsModel.fit(history or rows, "engine calibration sweep")
    await store.set_json(state.redis, costs.SECONDS_KEY, fitted.__dict__)
    await asyncio.to_thread(costs.save_seconds_model_file, state.settings.model_cache_dir, fitted)
    return {
        "seconds_model": dataclasses.asdict(fitted),
        "calls": [list(row) for row in rows],
        "usage": dataclasses.asdict(budget.spend),
    }


@router.get("/allocator", summary="What the auto strategy knows: cost model, runtime model, profiles")
async def allocator(state: StateDep) -> dict[str, Any]:
    engine, hardware = state.require_engine()
    seconds = await store.get_json(state.redis, costs.SECONDS_KEY)
    calibrations = await store.list_calibrations(state.redis)
    return {
        "model_shape": dataclasses.asdict(engine.shape),
        "hardware": {**dataclasses.asdict(hardware), "intensity": hardware.intensity},
        "count_weight_loading": state.settings.count_weight_loading,
        "seconds_model": seconds,
        "profiles": {
            name: {"source": profile.source, "probe_size": profile.probe_size, "plans": len(profile.plans)}
            for name, profile in load_profiles(state.settings.allocator_profile_dir).items()
        },
        "verifier_calibrations": [item.describe() for item in calibrations],
    }
