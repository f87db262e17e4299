"""The budget allocator's resources: verifier calibration, the engine's runtime model, what `auto` knows.

POST /v1/verifiers/{name}/calibrate   measure c and s of a verifier on labelled examples (stored in Redis)
POST /v1/allocator/calibrate-engine   time a few engine calls and fit the seconds model (stored)
GET  /v1/allocator                    cost model, runtime model, profiles and calibrations in force
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path

from service.api.protocol import CalibrateVerifierRequest, EngineCalibrationRequest, VerifierCalibrationOut
from service.api.state import StateDep
from service.runtime.engine import SamplingSpec, generate
from service.runtime.errors import InvalidRequest
from service.store import allocation as store
from strategies.allocation import costs
from strategies.allocation.calibrate import calibration_of, measure
from strategies.allocation.profiles import load_profiles
from verifiers import VERIFIER_NAMES
from verifiers.answers import AnswerSpec

router = APIRouter(prefix="/v1")

CALIBRATION_PROMPT = "Write a long story about a lighthouse keeper and a storm."


@router.post(
    "/verifiers/{name}/calibrate",
    response_model=VerifierCalibrationOut,
    summary="Measure a verifier's completeness and soundness on labelled examples",
)
async def calibrate_verifier(
    name: Annotated[str, Path(description="A verifier name.", json_schema_extra={"enum": [*VERIFIER_NAMES]})],
    body: CalibrateVerifierRequest,
    state: StateDep,
) -> VerifierCalibrationOut:
    if name not in VERIFIER_NAMES:
        raise InvalidRequest(
            f"Unknown verifier {name!r}; the verifiers are: {', '.join(VERIFIER_NAMES)}.", param="name"
        )
    engine, hardware = state.require_engine()
    sampling = SamplingSpec(
        temperature=body.sampling.temperature,
        top_p=body.sampling.top_p,
        max_tokens=body.sampling.max_tokens,
        stop=tuple(body.sampling.stop),
    )
    counts = await measure(
        engine=engine,
        hardware=hardware,
        settings=state.settings,
        verifier_name=name,
        options=body.options,
        examples=[(example.question, example.answer) for example in body.examples],
        samples=body.samples_per_question,
        sampling=sampling,
        answer=AnswerSpec(body.answer.type, body.answer.pattern),
        threshold=body.threshold,
    )
    calibration = calibration_of(name, body.family, counts, body.threshold)
    await store.save_calibration(state.redis, calibration)
    return VerifierCalibrationOut(**calibration.describe())


@router.post("/allocator/calibrate-engine", summary="Time engine calls and fit the runtime model auto uses")
async def calibrate_engine(body: EngineCalibrationRequest, state: StateDep) -> dict[str, Any]:
    engine, _ = state.require_engine()
    prompt = engine.render_chat([{"role": "user", "content": CALIBRATION_PROMPT}])
    prompt_tokens = len(engine.encode(prompt))
    rows: list[tuple[int, int, float, float]] = []
    for max_tokens in body.max_tokens:
        for samples in body.batch_sizes:
            spec = SamplingSpec(n=samples, temperature=1.0, max_tokens=max_tokens)
            started = time.monotonic()
            generation = await generate(engine, prompt, spec)
            seconds = time.monotonic() - started
            mean = generation.completion_tokens / max(len(generation.samples), 1)
            rows.append((prompt_tokens, samples, mean, seconds))
    history = await store.push_json(
        state.redis, costs.OBSERVATIONS_KEY, [list(row) for row in rows], costs.MAX_OBSERVATIONS
    )
    fitted = costs.SecondsModel.fit(history or rows, "engine calibration sweep")
    await store.set_json(state.redis, costs.SECONDS_KEY, fitted.__dict__)
    await asyncio.to_thread(costs.save_seconds_model_file, state.settings.model_cache_dir, fitted)
    return {"seconds_model": dataclasses.asdict(fitted), "calls": [list(row) for row in rows]}


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
