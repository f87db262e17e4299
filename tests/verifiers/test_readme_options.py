"""The README's verifier table names each verifier's options as the code spells them (issue 11: the calculator's
options were documented as `right`/`wrong`/`neutral` while the code takes `right_score`/...)."""

import re
from pathlib import Path

from pydantic import BaseModel

from verifiers.calculator import CalculatorOptions
from verifiers.process_judge import ProcessJudgeOptions
from verifiers.reward_model import RewardModelOptions

README = Path(__file__).resolve().parents[2] / "README.md"
OPTIONS: dict[str, type[BaseModel]] = {
    "calculator": CalculatorOptions,
    "process_judge": ProcessJudgeOptions,
    "reward_model": RewardModelOptions,
}


def documented_options(verifier: str) -> list[str]:
    """Backticked names in the row's options column, leaving out values in parentheses or after a name."""
    for line in README.read_text().splitlines():
        if line.startswith(f"| `{verifier}` |"):
            column = re.sub(r"\([^)]*\)", "", line.split("|")[3])
            return re.findall(r"(?:^|,)\s*`([a-z_]+)`", column)
    raise AssertionError(f"{verifier} is missing from the README's verifier table")


def test_every_documented_verifier_option_exists() -> None:
    for verifier, model in OPTIONS.items():
        names = documented_options(verifier)
        assert names, verifier
        unknown = [name for name in names if name not in model.model_fields]
        assert not unknown, f"README documents {verifier} options the code does not take: {unknown}"
