"""LangChain's `with_structured_output` through the service (issue 11: it used to return None silently), with
json_schema and json_mode, with and without `ttc`."""

from typing import Any

import jsonschema
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

pytestmark = pytest.mark.engine

QUESTION = "Describe a person called Ann, aged 31, as JSON with her name and age."
JSON_MODE_QUESTION = (
    "Describe a person called Ann, aged 31, as JSON with exactly two keys, name and age. Answer in JSON."
)


class Person(BaseModel):
    name: str = Field(..., max_length=20, description="The person's name.")
    age: int = Field(..., description="Age in years.")


def chat_model(service_url: str, ttc: dict[str, Any] | None, temperature: float = 0.0) -> ChatOpenAI:
    """Greedy without ttc by default; with ttc, sampled (greedy samples would all be the same)."""
    return ChatOpenAI(
        base_url=f"{service_url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        model="SmolLM2-135M-Instruct",
        temperature=0.7 if ttc else temperature,
        seed=1,
        max_completion_tokens=120,
        max_retries=0,
        extra_body={"ttc": ttc} if ttc else None,
    )


@pytest.mark.parametrize("ttc", [None, {"strategy": "best_of_n", "params": {"n": 3}}], ids=["plain", "ttc"])
def test_with_structured_output_json_schema(service_url: str, ttc: dict[str, Any] | None) -> None:
    structured = chat_model(service_url, ttc).with_structured_output(Person, method="json_schema")
    person = structured.invoke(QUESTION)
    assert isinstance(person, Person)


@pytest.mark.parametrize("ttc", [None, {"strategy": "best_of_n", "params": {"n": 3}}], ids=["plain", "ttc"])
def test_with_structured_output_json_mode(service_url: str, ttc: dict[str, Any] | None) -> None:
    schema = Person.model_json_schema()
    # json_mode puts no schema in the prompt (LangChain leaves that to the caller): asked only for "JSON", this
    # model keeps inventing keys until the length limit, so the question names the keys, as a caller would
    structured = chat_model(service_url, ttc).with_structured_output(schema, method="json_mode")
    answer = structured.invoke(JSON_MODE_QUESTION)
    assert isinstance(answer, dict)  # json_object constrains the syntax only; the keys are the model's choice
    jsonschema.validate(answer, {"type": "object"})
