"""Any OpenAI-compatible server as the engine, first of all vLLM's own (`vllm serve` or
`python -m vllm.entrypoints.openai.api_server`), or several of them.

We send raw prompts (text or token ids) to `/v1/completions`, streamed, so that continuations of one prompt
share their prefix in the server's prefix cache; closing the stream makes the server abort the request.
vLLM servers return exact token ids (`return_token_ids`); for other servers we count with the local tokenizer.
The chat template and the model's shape (for eFLOPs) come from a local copy of the model's folder.

Several engines, one search on one engine: `TTC_ENGINE_URL` is one URL (a vLLM server, or vLLM's router in
front of many) or a comma-separated list of vLLM servers. Every call of one test-time-compute request carries the
request's affinity key (`service.runtime.affinity`) in the `TTC_ENGINE_AFFINITY_HEADER` header, which the
router's consistent-hash policy hashes on; over a list we do the same ourselves with rendezvous hashing. So all
branches of a search and all attempts of a revision land on the engine holding their prefix, and different
requests spread over the engines. A server that fails is skipped for a while and its calls go to the next one in
the key's order; a call that was already streaming when its server died raises `EngineLost`, and
`engine.generate` redoes it on the next engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.runtime.affinity import current_affinity
from service.runtime.cost import ModelShape
from service.runtime.engine import Delta, Prompt, SamplingSpec, StreamState, TokenLogprob, closing
from service.runtime.engine_vllm import ChatTokenizer
from service.runtime.errors import EngineLost, EngineUnavailable, InvalidRequest
from service.runtime.load import EngineLoad, combine, parse_metrics
from service.runtime.settings import Settings

logger = logging.getLogger(__name__)

DOWN_SECONDS = 10.0  # how long a server that failed is passed over (unless no other is left)


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


def engine_urls(setting: str) -> list[str]:
    """`TTC_ENGINE_URL` split into its servers (one URL, or several separated by commas)."""
    urls = [url.strip().rstrip("/") for url in setting.split(",") if url.strip()]
    if not urls:
        raise ValueError("TTC_ENGINE_URL names no server.")
    return urls


SSE_LINE_END = re.compile(r"\r\n|\r|\n")


async def sse_data(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream, its lines split only where the SSE spec splits
    them (CRLF, CR, LF). httpx's aiter_lines also splits on Unicode line separators (U+2028, NEL, ...), which
    vLLM writes raw inside a JSON event when a token's text holds one (its top logprobs often do), and the
    event would be cut in two."""
    pending = ""
    async for chunk in chunks:
        pending += chunk
        held = "\r" if pending.endswith("\r") else ""  # a CR at the end may be the first half of a CRLF
        *lines, rest = SSE_LINE_END.split(pending[: len(pending) - len(held)])
        pending = rest + held
        for line in lines:
            if line.startswith("data:"):
                yield line[5:].strip()
    if pending.startswith("data:"):
        yield pending[5:].strip()


@dataclass
class EngineStats:
    """One server's counters, exported per engine through /metrics."""

    url: str
    calls: int = 0
    failures: int = 0
    restarts: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    down_until: float = 0.0

    @property
    def up(self) -> bool:
        return time.monotonic() >= self.down_until


class _Failed(Exception):
    """A server failed before it produced anything; the call may go to the next server unchanged."""


class RemoteEngine(ChatTokenizer):
    def __init__(self, settings: Settings, model_path: str) -> None:
        super().__init__(model_path)
        self.model_name = settings.served_model_name or Path(model_path).name
        self.max_model_len = settings.max_model_len
        self.shape = ModelShape.from_model_dir(Path(model_path))
        headers = {"Authorization": f"Bearer {settings.engine_api_key}"} if settings.engine_api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.engine_timeout_seconds, connect=10.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
        )
        self._engines = [EngineStats(url) for url in engine_urls(settings.engine_url)]
        self._affinity_header = settings.engine_affinity_header
        self._retries = settings.engine_retries
        self._remote_model = settings.engine_model
        self._turn = itertools.count()

    # -- choosing a server --------------------------------------------------------------------------------
    def order(self, key: str | None) -> list[EngineStats]:
        """Servers in the order a call with this affinity key tries them: rendezvous hashing on the key (so
        one key always prefers the same server, and keys spread evenly), or the least busy first without one.
        Servers that failed recently go last."""
        if key is not None:
            ranked = sorted(
                self._engines, key=lambda e: hashlib.sha256(f"{key}|{e.url}".encode()).digest(), reverse=True
            )
        else:
            turn = next(self._turn)
            count = len(self._engines)
            rotated = [self._engines[(turn + i) % count] for i in range(count)]
            ranked = sorted(rotated, key=lambda e: e.in_flight)
        return sorted(ranked, key=lambda e: not e.up)  # stable: keeps the key's order within up and down

    def stats(self) -> list[EngineStats]:
        return list(self._engines)

    async def _model(self) -> str:
        if self._remote_model is None:
            last: Exception | None = None
            for engine in self.order(None):
                try:
                    response = await self._client.get(f"{engine.url}/v1/models", timeout=10.0)
                    response.raise_for_status()
                    self._remote_model = str(response.json()["data"][0]["id"])
                    break
                except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                    last = exc
            else:
                raise EngineUnavailable(f"No engine listed its models: {last!r}")
        return self._remote_model

    # -- one call -----------------------------------------------------------------------------------------
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
        body.update(spec.engine_extras())
        if spec.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in spec.logit_bias}
        if spec.structured is not None:
            body["structured_outputs"] = spec.structured.as_dict()
        key = current_affinity()
        headers = {self._affinity_header: key} if key is not None else {}
        state.prompt_tokens = len(prompt) if isinstance(prompt, list) else len(self.encode(prompt))
        # Every server once, and at least 1 + retries tries (one URL may be a router that needs a moment to
        # notice a dead engine behind it).
        attempts = max(len(self._engines), 1 + self._retries)
        failure: Exception | None = None
        tried: set[str] = set()
        for attempt in range(attempts):
            ranked = self.order(key)
            engine = next(
                (e for e in ranked if e.url not in tried), ranked[0]
            )  # each server once, then again
            tried.add(engine.url)
            if attempt >= len(self._engines):
                await asyncio.sleep(min(0.5 * 2 ** (attempt - len(self._engines)), 4.0))
            produced = False
            try:
                # aclosing: a consumer that stops reading closes the HTTP stream now, which aborts the request
                async with closing(self._stream_one(engine, body, headers, state)) as deltas:
                    async for delta in deltas:
                        produced = True
                        yield delta
                return
            except _Failed as exc:
                failure = exc
                self._mark_failed(engine, exc)
                if produced:  # part of the answer reached the caller: it must redo the whole call
                    if len(self._engines) == 1 and self._retries == 0:
                        raise EngineUnavailable(f"The engine at {engine.url} failed: {exc}") from exc
                    engine.restarts += 1
                    raise EngineLost(f"The engine at {engine.url} died under the call: {exc}") from exc
                if attempt + 1 < attempts:  # nothing reached the caller: redo it here, on the next engine
                    engine.restarts += 1
                    state.restarts += 1
        raise EngineUnavailable(f"No engine could take the call; the last failure: {failure}")

    def _mark_failed(self, engine: EngineStats, exc: Exception) -> None:
        engine.failures += 1
        if len(self._engines) > 1:
            engine.down_until = time.monotonic() + DOWN_SECONDS
        logger.warning("engine %s failed: %s", engine.url, exc)

    async def _stream_one(
        self, engine: EngineStats, body: dict[str, Any], headers: dict[str, str], state: StreamState
    ) -> AsyncIterator[Delta]:
        engine.calls += 1
        engine.in_flight += 1
        try:
            async with self._client.stream(
                "POST", f"{engine.url}/v1/completions", json=body, headers=headers
            ) as response:
                if response.status_code == 400:
                    detail = (await response.aread()).decode(errors="replace")
                    raise InvalidRequest(f"The engine refused the request: {detail[:500]}")
                if response.status_code >= 500:
                    raise _Failed(f"HTTP {response.status_code}")
                if response.status_code >= 300:
                    raise EngineUnavailable(f"The engine answered HTTP {response.status_code}.")
                finished = False
                async for data in sse_data(response.aiter_text()):
                    if data == "[DONE]":
                        finished = True
                        break
                    chunk = json.loads(data)
                    if "error" in chunk and not chunk.get("choices"):
                        raise _Failed(f"error in the stream: {str(chunk['error'])[:300]}")
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
                if not finished:
                    raise _Failed("the stream ended without [DONE]")
            engine.prompt_tokens += state.prompt_tokens
            engine.cached_prompt_tokens += state.cached_prompt_tokens
        except httpx.HTTPError as exc:
            raise _Failed(repr(exc)) from exc
        finally:
            engine.in_flight -= 1

    def running_requests(self) -> int:
        return sum(engine.in_flight for engine in self._engines)

    async def load(self) -> EngineLoad:
        """Every up server's `/metrics` (vLLM's gauges), summed; a server that does not answer is left out."""

        async def one(engine: EngineStats) -> dict[str, list[float]]:
            try:
                response = await self._client.get(f"{engine.url}/metrics", timeout=2.0)
                response.raise_for_status()
            except httpx.HTTPError:
                return {}
            return parse_metrics(response.text)

        samples = await asyncio.gather(*(one(engine) for engine in self._engines if engine.up))
        return combine(samples, f"vLLM /metrics of {len(samples)} server(s)")

    async def check_health(self) -> None:
        """Healthy while at least one server is; the ones that are not are passed over for a while."""
        results = await asyncio.gather(*(self._check_one(engine) for engine in self._engines))
        if not any(result is None for result in results):
            raise EngineUnavailable("No engine is healthy: " + "; ".join(str(r) for r in results))

    async def _check_one(self, engine: EngineStats) -> str | None:
        """A vLLM server is healthy when its /health is 200. vLLM's router answers 503 on /health while any one
        of its workers is down, yet serves on the others; its /readiness (404 on a plain vLLM server) is 200
        while at least one worker is healthy, which is what "can serve" means here."""
        try:
            response = await self._client.get(f"{engine.url}/health", timeout=5.0)
            if response.status_code != 200:
                readiness = await self._client.get(f"{engine.url}/readiness", timeout=5.0)
                if readiness.status_code == 200:
                    logger.warning("%s is degraded but serving: %s", engine.url, response.text[:200])
                    response = readiness
        except httpx.HTTPError as exc:
            problem = f"{engine.url} is unreachable: {exc!r}"
        else:
            if response.status_code == 200:
                if engine.down_until:
                    engine.down_until = 0.0
                return None
            problem = f"{engine.url}/health answered {response.status_code}"
        if len(self._engines) > 1:
            engine.down_until = time.monotonic() + DOWN_SECONDS
        return problem

    async def close(self) -> None:
        await self._client.aclose()
