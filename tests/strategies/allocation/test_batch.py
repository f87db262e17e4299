"""The batch allocator's pure logic (strategies/allocation/batch.py) with simulated prompts of known success
rate: the cap holds, compute moves from easy and hopeless prompts to middling ones, fairness holds."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from service.runtime.cost import HARDWARE_PRESETS, ModelShape, generation_eflops, worst_case_eflops
from service.runtime.errors import BudgetExhausted
from service.store.allocation import VerifierCalibration
from strategies.allocation.batch import (
    CONFIDENCE_TABLE,
    Cost,
    Drawn,
    Fairness,
    Ledger,
    Prompt,
    Remaining,
    Rules,
    Step,
    allocate,
    confidence_table,
    next_step,
    unsampled,
    vote_curves,
    vote_of,
)
from strategies.allocation.costs import SecondsModel, lockstep
from strategies.allocation.plans import Situation
from strategies.allocation.profiles import Profile, ProfileBin, ProfilePlan
from strategies.base import Candidate

SHAPE = ModelShape(134_515_008, 30, 9, 3, 64)
HARDWARE = HARDWARE_PRESETS["b200"]
PROMPT_TOKENS, MAX_TOKENS = 40, 24
# The synthetic prompts follow the closed forms' model (a rate per prompt), not the measured profile's.
PROFILE = None


IN_FLIGHT = 64


def base(weights: bool = True) -> Situation:
    cost = Cost(SHAPE, HARDWARE, weights, SecondsModel(), IN_FLIGHT)
    return unsampled(cost, PROMPT_TOKENS, MAX_TOKENS, 64)


class Simulation:
    """Prompts with a true per-sample success rate; wrong samples scatter over a few answers. Plays the
    budget tracker too: spend is charged at the actual lengths, `left` is the cap minus the spend."""

    def __init__(self, rates: dict[str, float], cap: Remaining, seed: int = 0, weights: bool = True) -> None:
        self.rates = rates
        self.weights = weights
        self.cap = cap
        self.rng = random.Random(seed)
        self.eflops = 0.0
        self.tokens = 0
        self.peak_eflops = 0.0

    def left(self) -> Remaining:
        return Remaining(
            None if self.cap.tokens is None else self.cap.tokens - self.tokens,
            None if self.cap.eflops is None else self.cap.eflops - self.eflops,
        )

    async def draw(self, steps: list[tuple[str, int]]) -> dict[str, Drawn]:
        # what the tracker would reserve for these calls at once must fit what is left; as in
        # strategies/batch.py, the calls the engine runs together share the weight reads
        def share(n: int) -> int:
            return lockstep(len(steps), n, IN_FLIGHT)

        left = self.left()
        worst = sum(
            worst_case_eflops(SHAPE, HARDWARE, PROMPT_TOKENS, n, MAX_TOKENS, self.weights, share(n))
            for _, n in steps
        )
        assert left.fits(worst, sum(n * MAX_TOKENS for _, n in steps))
        out = {}
        for key, n in steps:
            candidates = []
            for _ in range(n):
                right = self.rng.random() < self.rates[key]
                answer = "right" if right else f"w{self.rng.randrange(20)}"
                candidates.append(Candidate(answer, answer, self.rng.randint(4, MAX_TOKENS)))
            lengths = [c.tokens for c in candidates]
            eflops = generation_eflops(SHAPE, HARDWARE, PROMPT_TOKENS, 0, lengths, self.weights, share(n))
            self.eflops += eflops
            self.tokens += sum(lengths)
            out[key] = Drawn(candidates, eflops, sum(lengths))
        return out


def run(
    rates: dict[str, float],
    cap: Remaining,
    rules: Rules | None = None,
    fairness: Fairness | None = None,
    seed: int = 0,
    weights: bool = True,
) -> tuple[dict[str, Ledger], Simulation]:
    simulation = Simulation(rates, cap, seed, weights)
    prompts = [Prompt(key, base(weights)) for key in rates]
    ledgers, pools = asyncio.run(
        allocate(
            prompts, simulation.draw, simulation.left, cap, rules or Rules(), fairness or Fairness(), PROFILE
        )
    )
    for ledger in ledgers:
        assert ledger.samples == len(pools[ledger.key])
    return {ledger.key: ledger for ledger in ledgers}, simulation


def per_sample() -> float:
    return generation_eflops(SHAPE, HARDWARE, PROMPT_TOKENS, 0, [MAX_TOKENS // 2], True)


def mixed(count: int) -> dict[str, float]:
    rates = {}
    for i in range(count):
        rates[f"easy-{i}"] = 0.97
        rates[f"middling-{i}"] = 0.45
        rates[f"hopeless-{i}"] = 0.01
    return rates


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("samples_each", [2, 6, 16])
def test_the_batch_never_spends_beyond_its_cap(seed: int, samples_each: int) -> None:
    rates = mixed(6)
    cap_eflops = per_sample() * samples_each * len(rates)
    for cap in (Remaining(None, cap_eflops), Remaining(samples_each * 12 * len(rates), None)):
        ledgers, simulation = run(rates, cap, seed=seed)
        assert cap.eflops is None or simulation.eflops <= cap.eflops
        assert cap.tokens is None or simulation.tokens <= cap.tokens
        assert sum(ledger.eflops for ledger in ledgers.values()) == pytest.approx(simulation.eflops)
        assert all(ledger.samples >= 1 for ledger in ledgers.values())


# Early stops (the default min_gain): settled and hopeless prompts stop and their share moves to middling ones.
STOPPING = Rules(round_share=0.5)


def test_easy_and_hopeless_prompts_get_fewer_samples_than_middling_ones() -> None:
    rates = mixed(8)
    ledgers, _ = run(rates, Remaining(None, per_sample() * 12 * len(rates)), rules=STOPPING, seed=3)

    def mean(family: str) -> float:
        chosen = [ledger.samples for key, ledger in ledgers.items() if key.startswith(family)]
        return sum(chosen) / len(chosen)

    assert mean("easy") < mean("middling")
    assert mean("hopeless") < mean("middling")
    # every decision is explained
    assert all(ledger.reason for ledger in ledgers.values())
    assert any(step.get("why") == "probe" for step in ledgers["easy-0"].steps)


def test_settled_and_hopeless_prompts_stop_and_leave_the_budget_unspent() -> None:
    rates = {f"easy-{i}": 0.99 for i in range(4)} | {f"hopeless-{i}": 0.0 for i in range(4)}
    cap = Remaining(None, per_sample() * 64 * len(rates))
    ledgers, simulation = run(rates, cap, rules=STOPPING, seed=1)
    assert {ledger.status for key, ledger in ledgers.items() if key.startswith("easy")} == {"settled"}
    assert {ledger.status for key, ledger in ledgers.items() if key.startswith("hopeless")} == {"hopeless"}
    assert simulation.eflops < 0.25 * (cap.eflops or 0)
    assert "settled" in ledgers["easy-0"].reason and "min_gain" in ledgers["hopeless-0"].reason


def test_every_prompt_gets_the_minimum_even_when_the_budget_is_tight() -> None:
    rates = mixed(5)
    one = worst_case_eflops(SHAPE, HARDWARE, PROMPT_TOKENS, 2, MAX_TOKENS, True)
    cap = Remaining(None, one * len(rates) * 1.05)
    ledgers, simulation = run(rates, cap, fairness=Fairness(min_samples=2))
    assert all(ledger.samples >= 2 for ledger in ledgers.values())
    assert simulation.eflops <= (cap.eflops or 0)


def test_a_budget_below_the_minimum_is_refused_unless_abstention_is_allowed() -> None:
    # priced by compute alone: with the weight reads, what a wave of calls shares dwarfs what each adds
    rates = mixed(5)
    one = worst_case_eflops(SHAPE, HARDWARE, PROMPT_TOKENS, 1, MAX_TOKENS, False)
    cap = Remaining(None, one * len(rates) * 0.3)
    with pytest.raises(BudgetExhausted):
        run(rates, cap, weights=False)
    ledgers, simulation = run(rates, cap, fairness=Fairness(allow_abstain=True), weights=False)
    funded = [ledger for ledger in ledgers.values() if ledger.samples > 0]
    unfunded = [ledger for ledger in ledgers.values() if ledger.status == "unfunded"]
    assert funded and unfunded and len(funded) + len(unfunded) == len(rates)
    assert simulation.eflops <= (cap.eflops or 0)


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_no_prompt_takes_more_than_its_maximum_share(fraction: float) -> None:
    rates = {"middling": 0.45, **{f"easy-{i}": 0.99 for i in range(9)}}
    cap = Remaining(None, per_sample() * 16 * len(rates))
    total = cap.eflops or 0.0
    unlimited, _ = run(rates, cap, seed=2)
    share = fraction * unlimited["middling"].eflops / total  # below what it takes without the cap
    ledgers, _ = run(rates, cap, fairness=Fairness(max_share=share), seed=2)
    for ledger in ledgers.values():  # the minimum (one sample) wins over the share
        assert ledger.eflops <= share * total * (1 + 1e-9) or ledger.samples == 1
    assert ledgers["middling"].samples < unlimited["middling"].samples
    assert ledgers["middling"].status == "capped" and "maximum share" in ledgers["middling"].reason


def test_max_samples_caps_one_prompt() -> None:
    ledgers, _ = run({"middling": 0.45}, Remaining(None, per_sample() * 200), rules=Rules(max_samples=8))
    assert ledgers["middling"].samples <= 8


def test_a_prompt_votes_with_its_verifier_or_else_with_the_batch_vote() -> None:
    calibration = VerifierCalibration("judge", "default", 0.9, 0.9, 50, 50, 0.5, "measured")
    judged = replace(base(), verifier="judge", calibration=calibration)
    assert vote_of(judged, Rules(vote="majority")) == "weighted"
    assert vote_of(base(), Rules()) == "confidence"
    assert vote_of(base(), Rules(vote="majority")) == "majority"


def whole_profile(accuracy: float, units: float = 8.0) -> Profile:
    """A measured profile of another strategy: one setting, `accuracy` whatever the probe said."""
    return Profile("deepconf", 4, "test", (), (ProfilePlan({"n": 8}, False, units, (accuracy,) * 5),))


def run_whole_runs(
    rates: dict[str, float], cap: Remaining, accuracy: float, rules: Rules | None = None
) -> tuple[dict[str, Ledger], Simulation, list[Step]]:
    """The allocator with one other strategy it may run whole, which answers right, costing its units."""
    simulation = Simulation(rates, cap)
    ran: list[Step] = []

    async def run_whole(step: Step) -> Drawn:
        ran.append(step)
        lengths = [MAX_TOKENS // 2] * step.samples
        eflops = generation_eflops(SHAPE, HARDWARE, PROMPT_TOKENS, 0, lengths, True)
        assert eflops <= step.worst_eflops
        simulation.eflops += eflops
        simulation.tokens += sum(lengths)
        answer = Candidate("right", "right", sum(lengths))
        return Drawn([answer], eflops, sum(lengths), answer)

    prompts = [Prompt(key, base()) for key in rates]
    ledgers, _ = asyncio.run(
        allocate(
            prompts,
            simulation.draw,
            simulation.left,
            cap,
            rules or Rules(),
            Fairness(),
            PROFILE,
            others={"deepconf": whole_profile(accuracy)},
            run_whole=run_whole,
        )
    )
    return {ledger.key: ledger for ledger in ledgers}, simulation, ran


def test_a_whole_strategy_run_predicted_better_per_eflop_answers_the_prompt() -> None:
    rates = {f"middling-{i}": 0.45 for i in range(4)}
    cap = Remaining(None, per_sample() * 24 * len(rates))
    ledgers, simulation, ran = run_whole_runs(rates, cap, accuracy=0.95)
    assert ran and {step.strategy for step in ran} == {"deepconf"}
    for step in ran:
        ledger = ledgers[step.key]
        assert ledger.status == "answered" and ledger.answer is not None and ledger.answer.answer == "right"
        assert ledger.steps[-1]["strategy"] == "deepconf" and ledger.steps[-1]["params"] == {"n": 8}
        assert "answered by one run of deepconf" in ledger.reason
    assert simulation.eflops <= (cap.eflops or 0)


def test_a_whole_run_is_not_taken_when_samples_pay_better_or_it_is_not_allowed() -> None:
    rates = {f"middling-{i}": 0.45 for i in range(4)}
    cap = Remaining(None, per_sample() * 24 * len(rates))
    _, _, ran = run_whole_runs(rates, cap, accuracy=0.05)  # predicted worse than the vote it has
    assert not ran
    _, _, ran = run_whole_runs(rates, cap, accuracy=0.95, rules=Rules(strategies=frozenset({"best_of_n"})))
    assert not ran
    only_runs = Rules(strategies=frozenset({"deepconf"}))
    ledgers, _, ran = run_whole_runs(rates, cap, accuracy=0.05, rules=only_runs)
    assert not ran  # the only step left is predicted to gain nothing: the prompts stop after their probe
    assert {ledger.status for ledger in ledgers.values()} == {"capped"}
    assert all("no other strategy's run predicted" in ledger.reason for ledger in ledgers.values())
    ledgers, _, ran = run_whole_runs(
        rates, cap, accuracy=0.95, rules=Rules(strategies=frozenset({"deepconf"}))
    )
    assert ran and all(ledger.samples >= 4 for ledger in ledgers.values())  # the probe, then only whole runs


def test_a_rounds_calls_share_the_weight_reads_up_to_what_is_in_flight() -> None:
    assert lockstep(200, 4, 64) == 16  # 16 calls of 4 samples fill the 64 in flight
    assert lockstep(5, 4, 64) == 5  # a small round: only its own calls
    assert lockstep(200, 100, 64) == 1  # a call larger than what is in flight runs alone
    assert lockstep(7, 4, None) == 7


def confidence_profile(table: dict[int, dict[int, float]]) -> Profile:
    bins = tuple(
        ProfileBin(m, 0.25, ((1.0, 0.5),), (0.5, 0.2), {CONFIDENCE_TABLE: row}) for m, row in table.items()
    )
    return Profile("best_of_n", 4, "test", bins, ())


def test_the_confidence_vote_is_priced_by_its_measured_curve_for_the_probes_agreement() -> None:
    """A prompt whose probe agrees (4/4) gains nothing from more samples on its measured curve and stops at
    its probe; one whose probe is split (1/4) gains most and gets the budget."""
    profile = confidence_profile(
        {1: {4: 0.15, 8: 0.21, 16: 0.26}, 4: {4: 0.87, 8: 0.87, 16: 0.87}},
    )
    answers = {"agreed": ["7", "7", "7", "7"], "split": ["1", "2", "3", "4"]}
    prompts = [Prompt(key, base()) for key in answers]
    drawn: dict[str, int] = dict.fromkeys(answers, 0)
    spent = 0.0

    async def draw(steps: list[tuple[str, int]]) -> dict[str, Drawn]:
        nonlocal spent
        out = {}
        for key, n in steps:
            pool = answers[key] * 8
            candidates = [Candidate(a, a, 12, score=1.0) for a in pool[drawn[key] : drawn[key] + n]]
            drawn[key] += n
            eflops = generation_eflops(SHAPE, HARDWARE, PROMPT_TOKENS, 0, [12] * n, True, len(steps))
            spent += eflops
            out[key] = Drawn(candidates, eflops, 12 * n)
        return out

    cap = Remaining(None, per_sample() * 40)
    rules = Rules(min_gain=0.001)
    curves = vote_curves(
        prompts, {key: [Candidate(a, a, 12) for a in v] for key, v in answers.items()}, profile, rules
    )
    assert curves["split"](8) == pytest.approx(0.21) and curves["agreed"](16) == pytest.approx(0.87)
    ledgers, _ = asyncio.run(
        allocate(
            prompts, draw, lambda: Remaining(None, (cap.eflops or 0) - spent), cap, rules, Fairness(), profile
        )
    )
    by_key = {ledger.key: ledger for ledger in ledgers}
    assert by_key["agreed"].samples == 4 and by_key["agreed"].status == "settled"
    assert by_key["split"].samples > 4
    assert spent <= (cap.eflops or 0)


def test_the_probes_most_confident_sample_picks_its_confidence_table() -> None:
    """Two probes that agree alike (2/4) are priced apart by how confident their most confident sample is:
    a confident one by a flat curve (settled, it stops at its probe), an unconfident one by a rising one; a
    level the fit split saw too rarely falls back to the table by agreement alone."""
    tables = {
        CONFIDENCE_TABLE: {4: 0.40, 16: 0.54},
        f"{CONFIDENCE_TABLE}@0": {4: 0.10, 16: 0.35},
        f"{CONFIDENCE_TABLE}@2": {4: 0.82, 16: 0.83},
    }
    bins = (ProfileBin(2, 1.0, ((1.0, 0.5),), (0.5, 0.2), tables),)
    profile = Profile("best_of_n", 4, "test", bins, (), confidence_bins=(4.5, 6.0))

    def probe(top: float) -> list[Candidate]:
        return [Candidate(a, a, 12, score=s) for a, s in zip("7788", (4.0, 4.1, 4.2, top), strict=True)]

    pools = {"unsure": probe(4.3), "middle": probe(5.0), "sure": probe(7.0)}
    assert confidence_table(profile, pools["unsure"]) == f"{CONFIDENCE_TABLE}@0"
    assert confidence_table(profile, pools["middle"]) == f"{CONFIDENCE_TABLE}@1"
    assert confidence_table(profile, pools["sure"]) == f"{CONFIDENCE_TABLE}@2"
    assert confidence_table(replace(profile, confidence_bins=()), pools["sure"]) == CONFIDENCE_TABLE
    prompts = [Prompt(key, base()) for key in pools]
    curves = vote_curves(prompts, pools, profile, Rules())
    assert curves["unsure"](16) == pytest.approx(0.35)
    assert curves["middle"](16) == pytest.approx(0.54)  # no @1 table: by agreement alone
    assert curves["sure"](16) == pytest.approx(0.83)
    steps = {
        key: next_step(key, replace(base(), probe_samples=4), Rules().min_gain, curve=curves[key])
        for key in pools
    }
    assert steps["unsure"] is not None and steps["unsure"].gain > 0.2
    sure = steps["sure"]
    assert sure is not None and sure.gain / sure.samples < Rules().min_gain  # it stops at its probe
