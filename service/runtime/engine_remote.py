"""Any OpenAI-compatible server as the engine, first of all vLLM's own (`vllm serve` or
`python -m vllm.entrypoints.openai.api_server`).

We send raw prompts (text or token ids) to `/v1/completions`, streamed, so that continuations of one prompt
share their prefix in the server's prefix cache; closing the stream makes the server abort the request.
vLLM servers return exact token ids (`return_token_ids`); for other servers we count with the local tokenizer.
The chat template and the model's shape (for eFLOPs) come from a local copy of the model's folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from service.runtime.cost import ModelShape
from service.runtime.engine import Delta, Prompt, SamplingSpec, StreamState, TokenLogprob
from service.runtime.engine_vllm import ChatTokenizer
from service.runtime.errors import EngineUnavailable, InvalidRequest
from service.runtime.settings import Settings

logger = logging.getLogger(__name__)


def _logprobs_from_chunk(choice: dict[str, Any]) -> tuple[TokenLogprob, ...] | None:
    logprobs = choice.get("logprobs")
    if not logprobs or not logprobs.get("tokens"):
        return None
    tops = logprobs.get("top_logprobs") or [None] * len(logprobs["tokens"])
    return tuple(
        TokenLogprob(
            token=token,
            logprob=float(value if value is not None else float("-inf")),
            top=tuple(sorted(((t, float(v)) for t, v in (top or {}).items()), key=lambda item: -item[1])),
        )
        for token, value, top in zip(logprobs["tokens"], logprobs["token_logprobs"], tops, strict=False)
    )


class RemoteEngine(ChatTokenizer):
    def __init__(self, settings: Settings, model_path: str) -> None:
        super().__init__(model_path)
        self.model_name = settings.served_model_name or Path(model_path).name
        self.max_model_len = settings.max_model_len
        self.shape = ModelShape.from_model_dir(Path(model_path))
        headers = {"Authorization": f"Bearer {settings.engine_api_key}"} if settings.engine_api_key else {}
        self._client = httpx.AsyncClient(
            base_url=settings.engine_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.engine_timeout_seconds, connect=10.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
        )
        self._remote_model = settings.engine_model
        self._in_flight = 0

    async def _model(self) -> str:
        if self._remote_model is None:
            response = await self._client.get("/v1/models")
            response.raise_for_status()
            self._remote_model = str(response.json()["data"][0]["id"])
        return self._remote_model

    async def stream(self, prompt: Prompt, spec: SamplingSpec, state: StreamState) -> AsyncIterator[Delta]:
        body: dict[str, Any] = {
            "model": await self._model(),
            "prompt": prompt,
            "n": spec.n,
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "max_tokens": spec.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
            "skip_special_tokens": True,
            "include_stop_str_in_output": spec.include_stop_str_in_output,
        }
        if spec.stop:
            body["stop"] = list(spec.stop)
        if spec.seed is not None:
            body["seed"] = spec.seed
        if spec.logprobs is not None:
            body["logprobs"] = spec.logprobs
        if spec.structured is not None:
            body["structured_outputs"] = {spec.structured[0]: spec.structured[1]}
        state.prompt_tokens = len(prompt) if isinstance(prompt, list) else len(self.encode(prompt))
        self._in_flight += 1
        try:
            async with self._client.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code == 400:
                    detail = (await response.aread()).decode(errors="replace")
                    raise InvalidRequest(f"The engine refused the request: {detail[:500]}")
                if response.status_code >= 300:
                    raise EngineUnavailable(f"The engine answered HTTP {response.status_code}.")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    usage = chunk.get("usage")
                    if usage:
                        state.prompt_tokens = int(usage.get("prompt_tokens") or state.prompt_tokens)
                        details = usage.get("prompt_tokens_details") or {}
                        state.cached_prompt_tokens = int(details.get("cached_tokens") or 0)
                    for choice in chunk.get("choices", []):
                        text = choice.get("text") or ""
                        token_ids = choice.get("token_ids")
                        if token_ids is None:
                            token_ids = self.encode(text) if text else []
                        yield Delta(
                            index=int(choice.get("index", 0)),
                            text=text,
                            token_ids=tuple(token_ids),
                            finish_reason=choice.get("finish_reason"),
                            logprobs=_logprobs_from_chunk(choice),
                        )
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"The engine at {self._client.base_url} failed: {exc!r}") from exc
        finally:
            self._in_flight -= 1

    def running_requests(self) -> int:
        return self._in_flight

    async def check_health(self) -> None:
        try:
            response = await self._client.get("/health", timeout=5.0)
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"The engine at {self._client.base_url} is unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise EngineUnavailable(f"The engine's /health answered {response.status_code}.")

    async def close(self) -> None:
        await self._client.aclose()
