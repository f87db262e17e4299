"""The allocator's other pure parts: runtime fit, plan costs, profiles, difficulty, verifier calibration."""

import json
from pathlib import Path

import pytest

from service.runtime.cost import HARDWARE_PRESETS, ModelShape, generation_eflops
from service.store.allocation import VerifierCalibration, default_calibration
from strategies.allocation import difficulty
from strategies.allocation.calibrate import Counts, calibration_of, count
from strategies.allocation.costs import CallShape, SecondsModel, call_eflops, log_bins
from strategies.allocation.profiles import load_profiles, parse_profile
from strategies.base import Candidate

SHAPE = ModelShape(134_515_008, 30, 9, 3, 64)


def test_seconds_model_recovers_a_known_runtime() -> None:
    truth = SecondsModel(0.2, 1e-3, 0.03, 0.002)
    rows = [
        (p, n, t, truth.predict(CallShape(p, n, t, 64)))
        for p in (20, 200)
        for n in (1, 4, 16)
        for t in (8, 60)
    ]
    fitted = SecondsModel.fit(rows, "test")
    assert fitted.fitted and fitted.observations == 12
    for p, n, t, seconds in rows:
        assert fitted.predict(CallShape(p, n, t, 64)) == pytest.approx(seconds, rel=1e-6)
    assert SecondsModel.from_json(fitted.to_json()) == fitted
    assert not SecondsModel.fit(rows[:3], "test").fitted


def test_plan_cost_is_the_kinetics_cost_with_the_prompt_counted_once() -> None:
    hardware = HARDWARE_PRESETS["b200"]
    call = CallShape(100, 8, 50.0, 64)
    assert call_eflops(SHAPE, hardware, call, False) == pytest.approx(
        generation_eflops(SHAPE, hardware, 100, 0, [50] * 8, False)
    )
    # papers.md's worked example: decode part 3.05468e11 eFLOPs, plus prefill 2 P L_in.
    assert call_eflops(SHAPE, hardware, call, False) - 2 * SHAPE.parameters * 100 == pytest.approx(
        3.05468e11, rel=1e-5
    )
    cached = CallShape(100, 8, 50.0, 64, cached_tokens=96)
    assert call_eflops(SHAPE, hardware, cached, False) < call_eflops(SHAPE, hardware, call, False)
    assert log_bins(1, 20) == [1, 2, 4, 8, 16, 20]


PROFILE = {
    "strategy": "best_of_n",
    "probe_size": 4,
    "bins": [
        {
            "signature": 4,
            "weight": 0.5,
            "p_mixture": [[0.5, 0.85], [0.5, 0.95]],
            "wrong_shares": [0.6, 0.2],
            "accuracy": {"majority": {"4": 0.9, "16": 0.96}},
        }
    ],
    "plans": [],
}


def test_profiles_parse_interpolate_and_reload(tmp_path: Path) -> None:
    profile = parse_profile(PROFILE, "x.json")
    assert profile.measured("majority", 4, 4) == 0.9
    assert profile.measured("majority", 4, 8) == pytest.approx(0.93)  # halfway in log N
    assert profile.measured("majority", 4, 32) is None and profile.measured("majority", 1, 4) is None
    (tmp_path / "best_of_n.json").write_text(json.dumps(PROFILE))
    (tmp_path / "broken.json").write_text("{")
    assert set(load_profiles(tmp_path)) == {"best_of_n"}


def candidates(*answers: str | None) -> list[Candidate]:
    return [Candidate(text="", answer=answer) for answer in answers]


def test_difficulty_from_the_probe() -> None:
    assert difficulty.signature(candidates("7", "7", "8", None)) == 2
    agree = difficulty.estimate(candidates("7", "7", "7", "7"), None, None)
    split = difficulty.estimate(candidates("1", "2", "3", None), None, None)
    assert agree.p > 0.7 > 0.2 > split.p and agree.bin > split.bin
    measured = difficulty.estimate(candidates("7", "7", "7", "7"), parse_profile(PROFILE, "x.json"), None)
    assert measured.p == pytest.approx(0.9) and measured.wrong_shares == [0.6, 0.2]
    assert "measured profile" in measured.source


def test_verifier_accepts_move_the_estimate() -> None:
    calibration = VerifierCalibration("judge", "f", 0.9, 0.9, 10, 10, 0.5, "measured")
    probe = candidates("1", "2", "3", "4")
    for c in probe:
        c.score = 0.9
    accepted = difficulty.estimate(probe, None, calibration)
    for c in probe:
        c.score = 0.1
    rejected = difficulty.estimate(probe, None, calibration)
    assert accepted.p > rejected.p and accepted.accepted == 4 and rejected.accepted == 0


def test_calibration_counts_are_laplace_smoothed() -> None:
    counts = count([True, True, False, False, False], [0.9, 0.2, 0.1, 0.7, 0.3], 0.5)
    assert counts == Counts(1, 2, 2, 3)
    calibration = calibration_of("judge", "f", counts, 0.5)
    assert calibration.completeness == pytest.approx(0.5) and calibration.soundness == pytest.approx(0.6)
    assert default_calibration("judge", "f").source == "default"
    assert default_calibration("reference", "f").completeness == 1.0


def test_neighbour_prior_weights_close_outcomes() -> None:
    from strategies.allocation.neighbours import prior_from

    a, b, far = [1.0, 0.0], [0.96, 0.28], [0.0, 1.0]
    rows: list[dict[str, object]] = [
        {"v": a, "p": 0.9, "t": 10},
        {"v": b, "p": 0.8, "t": 20},
        {"v": far, "p": 0.0, "t": 90},
    ]
    prior = prior_from([1.0, 0.0], rows)
    assert prior is not None and prior.neighbours == 2 and not prior.confident
    assert prior.p > 0.7 and prior.tokens == pytest.approx(15.0)
    assert prior_from([0.0, -1.0], rows) is None and prior_from([1.0, 0.0], []) is None


def test_neighbour_prior_counts_as_much_as_the_probe_and_only_near_duplicates_skip_it() -> None:
    from strategies.allocation.neighbours import PRIOR_SAMPLES, prior_from

    similar = [0.8, 0.6]  # cosine 0.8 with [1, 0]: a neighbour, not a near-duplicate
    rows: list[dict[str, object]] = [{"v": similar, "p": 1.0} for _ in range(8)]
    prior = prior_from([1.0, 0.0], rows)
    assert prior is not None and prior.neighbours == 8 and prior.near_duplicates == 0
    assert not prior.confident  # eight neighbours of another difficulty do not replace the probe
    assert prior.alpha + prior.beta == pytest.approx(1.0 + PRIOR_SAMPLES)
    same: list[dict[str, object]] = [{"v": [1.0, 0.0], "p": 0.2} for _ in range(3)]
    close = prior_from([1.0, 0.0], same)
    assert close is not None and close.confident and close.p == pytest.approx((0.5 + 0.8) / 5)
