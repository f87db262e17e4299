"""What the allocator keeps in Redis (shared by replicas, survives restarts of one): verifier calibrations,
the engine's seconds model and its observations, and outcomes of past prompts for the nearest-neighbour prior.

Redis is an optimisation here, never a dependency of answering: every read and write has a short timeout and
a failure falls back to defaults (and is said so in the allocation object).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as redis_async
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CALIBRATION_PREFIX = "ttc:verifier_calibration:"
NEIGHBOURS_KEY = "ttc:allocator:outcomes"
REDIS_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True)
class VerifierCalibration:
    """Completeness c = P(accept | correct) and soundness s = P(reject | wrong) of a verifier on a family."""

    verifier: str
    family: str
    completeness: float
    soundness: float
    correct_examples: int
    wrong_examples: int
    threshold: float
    source: str  # "measured", "default" or "exact"
    measured_at: float = 0.0

    def describe(self) -> dict[str, Any]:
        return asdict(self)


# Conservative defaults for verifiers nobody calibrated: accept most correct answers, reject only half of the
# wrong ones; `reference` knows the answer, so it is exact by construction.
DEFAULTS: dict[str, tuple[float, float]] = {"reference": (1.0, 1.0)}
DEFAULT_COMPLETENESS = 0.8
DEFAULT_SOUNDNESS = 0.5


def default_calibration(verifier: str, family: str) -> VerifierCalibration:
    if verifier in DEFAULTS:
        c, s = DEFAULTS[verifier]
        return VerifierCalibration(verifier, family, c, s, 0, 0, 0.5, "exact")
    return VerifierCalibration(
        verifier, family, DEFAULT_COMPLETENESS, DEFAULT_SOUNDNESS, 0, 0, 0.5, "default"
    )


def connect(url: str) -> redis_async.Redis:
    return redis_async.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


async def save_calibration(url: str, calibration: VerifierCalibration) -> None:
    client = connect(url)
    try:
        key = f"{CALIBRATION_PREFIX}{calibration.verifier}:{calibration.family}"
        await client.set(key, json.dumps(calibration.describe()))
    finally:
        await client.aclose()


async def load_calibration(url: str, verifier: str, family: str) -> VerifierCalibration:
    """The stored calibration for (verifier, family), else the verifier's `default` family, else defaults."""
    client = connect(url)
    try:
        for name in (family, "default"):
            raw = await client.get(f"{CALIBRATION_PREFIX}{verifier}:{name}")
            if raw:
                return VerifierCalibration(**json.loads(raw))
    except (RedisError, OSError, ValueError, TypeError) as exc:
        logger.warning("verifier calibration unavailable (%r); using defaults", exc)
    finally:
        await client.aclose()
    return default_calibration(verifier, family)


async def list_calibrations(url: str) -> list[VerifierCalibration]:
    client = connect(url)
    found: list[VerifierCalibration] = []
    try:
        async for key in client.scan_iter(match=f"{CALIBRATION_PREFIX}*", count=200):
            raw = await client.get(key)
            if raw:
                found.append(VerifierCalibration(**json.loads(raw)))
    except (RedisError, OSError, ValueError, TypeError) as exc:
        logger.warning("cannot list verifier calibrations: %r", exc)
    finally:
        await client.aclose()
    return sorted(found, key=lambda item: (item.verifier, item.family))


async def get_json(url: str, key: str) -> Any:
    client = connect(url)
    try:
        raw = await client.get(key)
        return json.loads(raw) if raw else None
    except (RedisError, OSError, ValueError) as exc:
        logger.warning("redis read of %s failed: %r", key, exc)
        return None
    finally:
        await client.aclose()


async def set_json(url: str, key: str, value: Any) -> None:
    client = connect(url)
    try:
        await client.set(key, json.dumps(value))
    except (RedisError, OSError) as exc:
        logger.warning("redis write of %s failed: %r", key, exc)
    finally:
        await client.aclose()


async def push_json(url: str, key: str, value: Any, keep: int, read_back: bool = True) -> list[Any]:
    """Append to a capped list and return the list as it now is (empty when not read back)."""
    client = connect(url)
    try:
        pipe = client.pipeline()
        pipe.rpush(key, json.dumps(value))
        pipe.ltrim(key, -keep, -1)
        if read_back:
            pipe.lrange(key, 0, -1)
        results = await pipe.execute()
        return [json.loads(row) for row in results[2]] if read_back else []
    except (RedisError, OSError, ValueError) as exc:
        logger.warning("redis append to %s failed: %r", key, exc)
        return []
    finally:
        await client.aclose()


async def read_list(url: str, key: str) -> list[Any]:
    client = connect(url)
    try:
        return [json.loads(row) for row in await client.lrange(key, 0, -1)]
    except (RedisError, OSError, ValueError) as exc:
        logger.warning("redis read of %s failed: %r", key, exc)
        return []
    finally:
        await client.aclose()


def now() -> float:
    return round(time.time(), 3)
