"""What every process verifier shares: splitting a partial solution into steps, aggregating step scores
into one candidate score, and parsing a verifier's options into a validated model (a clear 400 otherwise).

A candidate is the whole partial solution so far; its steps are separated by a delimiter ("\\n\\n" by
default, what the tree searches write between steps). Aggregation follows the PRM papers: the last step's
score is the default (it beat min and product in Snell et al.); min and product are there for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.runtime.errors import InvalidRequest

Aggregate = Literal["last", "min", "product"]
DEFAULT_DELIMITER = "\n\n"

OptionsT = TypeVar("OptionsT", bound=BaseModel)


class StepOptions(BaseModel):
    """Options every process verifier takes; each verifier's own options model extends this one."""

    model_config = ConfigDict(extra="forbid")

    aggregate: Aggregate = Field(
        "last", description="How step scores become one score: last, min or product."
    )
    delimiter: str = Field(
        DEFAULT_DELIMITER, min_length=1, max_length=32, description="What separates the steps of a candidate."
    )


def split_steps(text: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """The non-blank steps of `text`, stripped; a text without the delimiter is one step; blank text none."""
    return [step.strip() for step in text.split(delimiter) if step.strip()]


def aggregate(scores: Sequence[float], how: Aggregate = "last", empty: float = 0.5) -> float:
    """One score from step scores (`empty` when there are no steps), clipped to [0, 1]."""
    if not scores:
        return empty
    if how == "last":
        value = scores[-1]
    elif how == "min":
        value = min(scores)
    else:
        value = math.prod(scores)
    return min(1.0, max(0.0, float(value)))


def parse_options(model: type[OptionsT], options: dict[str, object], verifier: str) -> OptionsT:
    """Validated options, or InvalidRequest naming the offending `verifier.<option>` and what it accepts."""
    try:
        return model.model_validate(options)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        param = f"verifier.{where}" if where else "verifier"
        known = ", ".join(sorted(model.model_fields))
        message = f"Bad {param} for the {verifier} verifier: {first['msg']}."
        if first["type"] == "extra_forbidden":
            message = f"The {verifier} verifier has no option {where!r}; its options are: {known}."
        raise InvalidRequest(message, param=param) from error
