"""A load scenario: what to send (a weighted mix of requests), what each draws its prompts from, how requests
arrive (Poisson or gamma at a rate, or a fixed number in flight), for how long, and the SLOs that decide
goodput. Scenarios are TOML files (loadtests/scenarios/*.toml), validated here so a typo fails before any
traffic is sent.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loadtests.fictional_facts import World
from loadtests.fictional_facts import build as build_world
from loadtests.fit_profiles import arithmetic, gsm8k

Endpoint = Literal["chat", "solve"]
Data = Literal["arithmetic", "gsm8k", "random", "rag"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SLO(Strict):
    ttft_ms: float | None = Field(None, gt=0, description="Time to first token, for streamed chat requests.")
    e2e_ms: float | None = Field(None, gt=0, description="End-to-end latency, for every request.")


class MixEntry(Strict):
    """One kind of request in the mix, drawn with probability weight / sum(weights)."""

    name: str = Field(..., min_length=1, description="Label in the report.")
    weight: float = Field(1.0, gt=0)
    endpoint: Endpoint = Field("chat", description="chat: streamed /v1/chat/completions; solve: /v1/solve.")
    strategy: str | None = Field(
        None, description="ttc strategy; None on chat is plain generation (also valid against raw vLLM)."
    )
    budget: dict[str, int | float] = Field(
        default_factory=dict, description="ttc budget (tokens, eflops, seconds); whole numbers stay integers."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Strategy params.")
    verifier: str | None = None
    data: Data = "arithmetic"
    families: list[str] = Field(
        default_factory=lambda: ["add1", "add2", "mul"], description="Arithmetic families to draw from."
    )
    input_len: int = Field(128, ge=1, le=8192, description="For data = random: prompt tokens (approx.).")
    max_tokens: int = Field(32, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    ignore_eos: bool = Field(False, description="Plain chat only: generate exactly max_tokens.")

    @model_validator(mode="after")
    def _consistent(self) -> MixEntry:
        if self.endpoint == "solve" and self.strategy is None:
            raise ValueError(f"mix {self.name!r}: endpoint solve needs a strategy")
        if self.data == "rag" and self.endpoint != "solve":
            raise ValueError(f"mix {self.name!r}: data rag needs endpoint solve")
        return self


class Scenario(Strict):
    name: str
    description: str = ""
    arrival: Literal["poisson", "gamma", "concurrency"] = "poisson"
    burstiness: float = Field(1.0, gt=0, description="Gamma shape; 1 is Poisson, < 1 burstier.")
    rates: list[float] = Field(
        ..., min_length=1, description="Requests/s to sweep (arrival = concurrency: requests in flight)."
    )
    warmup_seconds: float = Field(0.0, ge=0, description="Sent but not counted, at the start of every rate.")
    duration_seconds: float = Field(..., gt=0, description="Measured time at every rate.")
    seed: int = 0
    slo: SLO = Field(default_factory=SLO)
    mix: list[MixEntry] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _rates(self) -> Scenario:
        if any(rate <= 0 for rate in self.rates):
            raise ValueError("rates must be positive")
        if self.arrival == "concurrency" and any(rate != int(rate) for rate in self.rates):
            raise ValueError("arrival = concurrency takes whole numbers of requests in flight")
        names = [entry.name for entry in self.mix]
        if len(set(names)) != len(names):
            raise ValueError("mix names must be unique")
        return self

    @property
    def needs_ttc(self) -> bool:
        return any(entry.endpoint == "solve" or entry.strategy is not None for entry in self.mix)


def load_scenario(path: Path) -> Scenario:
    with path.open("rb") as handle:
        return Scenario.model_validate(tomllib.load(handle))


@dataclass(frozen=True)
class Item:
    """One prompt with its known answer (None for random prompts) and how to judge it."""

    prompt: str
    answer: str | None
    answer_type: Literal["number", "text"] = "number"


@dataclass
class Pools:
    """The prompts every data source offers, each built once per run from the run's seed."""

    seed: int
    built: dict[str, list[Item]] = field(default_factory=dict)

    def items(self, entry: MixEntry) -> list[Item]:
        key = f"{entry.data}:{','.join(entry.families)}:{entry.input_len}"
        if key not in self.built:
            self.built[key] = self._build(entry, random.Random(f"{self.seed}-{key}"))
        return self.built[key]

    @staticmethod
    def _build(entry: MixEntry, rng: random.Random) -> list[Item]:
        if entry.data == "arithmetic":
            problems = [arithmetic(rng, family, i) for family in entry.families for i in range(200)]
            return [Item(p.question, p.answer) for p in problems]
        if entry.data == "gsm8k":
            return [Item(p.question, p.answer) for p in gsm8k("test", 300, rng)]
        if entry.data == "rag":
            return [Item(q.question, q.answer, "text") for q in rag_world().questions]
        words = [
            "alpha",
            "beta",
            "gamma",
            "delta",
            "epsilon",
            "zeta",
            "eta",
            "theta",
            "iota",
            "kappa",
            "lambda",
            "mu",
        ]
        return [Item(" ".join(rng.choice(words) for _ in range(entry.input_len)), None) for _ in range(64)]


def rag_world() -> World:
    """The fictional-facts world the RAG mix asks about (its documents go into a corpus before the run)."""
    return build_world(seed=0, people=120, towns=60, questions=60, demos=4)
