"""Plans on a busy engine: the runtime model's slope grows with the sequences already in the batch; the latency
goal shrinks the caps by the predicted slowdown (pure logic)."""

from __future__ import annotations

import pytest

from service.runtime.load import EngineLoad
from strategies.allocation.costs import CallShape, SecondsModel
from strategies.allocation.load import adjust, loaded
from strategies.allocation.plans import Caps

MODEL = SecondsModel(intercept=0.0, per_prompt_token=0.0, per_token=0.02, per_token_per_sample=0.001)
BUSY = EngineLoad(running=30, waiting=10, kv_cache_usage=0.5, source="test")


def test_a_busy_engine_makes_every_call_slower() -> None:
    call = CallShape(100, 4, 51.0, 64)
    assert MODEL.predict(call) == pytest.approx(50 * (0.02 + 0.004))
    assert loaded(MODEL, 40).predict(call) == pytest.approx(50 * (0.02 + 0.044))


def test_a_fit_without_batch_effect_still_slows_down_under_load() -> None:
    flat = SecondsModel(intercept=0.0, per_prompt_token=0.0, per_token=0.04, per_token_per_sample=0.0)
    assert loaded(flat, 10).per_token == pytest.approx(0.04 * (1 + 10 * 0.05))


def test_latency_goal_shrinks_the_caps_by_the_slowdown() -> None:
    adjustment = adjust(MODEL, BUSY, "latency", 100, 65)
    # one full sample: 64 * 0.021 idle, 64 * 0.061 with 40 more sequences in the batch
    assert adjustment.slowdown == pytest.approx(0.061 / 0.021)
    assert adjustment.cap_factor == pytest.approx(0.021 / 0.061)
    caps = adjustment.caps(Caps(tokens=1000, eflops=3e12, seconds=20.0))
    assert caps.tokens == int(1000 * 0.021 / 0.061) and caps.seconds == 20.0
    assert caps.eflops == pytest.approx(3e12 * 0.021 / 0.061)
    assert adjustment.describe()["running"] == 30 and adjustment.active


def test_accuracy_goal_and_an_idle_engine_keep_the_caps() -> None:
    caps = Caps(tokens=1000, eflops=None, seconds=None)
    accuracy = adjust(MODEL, BUSY, "accuracy", 100, 65)
    assert accuracy.caps(caps) == caps and accuracy.slowdown > 1
    assert accuracy.seconds_model.per_token == pytest.approx(0.06)  # seconds are still predicted on the load
    idle = adjust(MODEL, EngineLoad(0, 0, 0.0, "test"), "latency", 100, 65)
    assert idle.caps(caps) == caps and idle.seconds_model is MODEL and not idle.active
    assert adjust(MODEL, None, "latency", 100, 65).describe()["source"] == "not reported by the engine"
