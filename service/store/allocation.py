"""What the allocator keeps in Redis (shared by replicas, survives restarts of one): verifier calibrations,
the engine's seconds model and its observations, and outcomes of past prompts for the nearest-neighbour prior.

Every function takes the service's one Redis client (with its timeouts), or None where there is none. Redis
is an optimisation here, never a dependency of answering: a failed read or write falls back to defaults (and
is said so in the allocation object); only storing a calibration someone asked for fails loudly.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.runtime.errors import StorageUnavailable

logger = logging.getLogger(__name__)

CALIBRATION_PREFIX = "ttc:verifier_calibration:"
# Capped lists (observations, outcome memories) also expire when nobody wrote to them for this long: a memory
# namespace is a request parameter, so without it every name anyone ever sent would stay forever.
LIST_TTL_SECONDS = 30 * 24 * 3600


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


async def save_calibration(client: Redis | None, calibration: VerifierCalibration) -> None:
    """Store a measured calibration; unlike reads, a failure here is the caller's error (nothing was saved)."""
    if client is None:
        raise StorageUnavailable(
            "Verifier calibrations are stored in Redis, and the service has no Redis client."
        )
    try:
        key = f"{CALIBRATION_PREFIX}{calibration.verifier}:{calibration.family}"
        await client.set(key, json.dumps(calibration.describe()))
    except (RedisError, OSError) as exc:
        raise StorageUnavailable(f"Could not store the calibration in Redis: {exc}") from exc


async def load_calibration(client: Redis | None, verifier: str, family: str) -> VerifierCalibration:
    """The stored calibration for (verifier, family), else the verifier's `default` family, else defaults."""
    if client is not None:
        try:
            for name in (family, "default"):
                raw = await client.get(f"{CALIBRATION_PREFIX}{verifier}:{name}")
                if raw:
                    return VerifierCalibration(**json.loads(raw))
        except (RedisError, OSError, ValueError, TypeError) as exc:
            logger.warning("verifier calibration unavailable (%r); using defaults", exc)
    return default_calibration(verifier, family)


async def list_calibrations(client: Redis | None) -> list[VerifierCalibration]:
    found: list[VerifierCalibration] = []
    if client is None:
        return found
    try:
        async for key in client.scan_iter(match=f"{CALIBRATION_PREFIX}*", count=200):
            raw = await client.get(key)
            if raw:
                found.append(VerifierCalibration(**json.loads(raw)))
    except (RedisError, OSError, ValueError, TypeError) as exc:
        logger.warning("cannot list verifier calibrations: %r", exc)
    return sorted(found, key=lambda item: (item.verifier, item.family))


async def get_json(client: Redis | None, key: str) -> Any:
    if client is None:
        return None
    try:
        raw = await client.get(key)
        return json.loads(raw) if raw else None
    except (RedisError, OSError, ValueError) as exc:
        logger.warning("redis read of %s failed: %r", key, exc)
        return None


async def set_json(client: Redis | None, key: str, value: Any) -> None:
    if client is None:
        return
    try:
        await client.set(key, json.dumps(value))
    except (RedisError, OSError) as exc:
        logger.warning("redis write of %s failed: %r", key, exc)


async def push_json(
    client: Redis | None, key: str, values: list[Any], keep: int, read_back: bool = True
) -> list[Any]:
    """Append to a capped list in one round trip; return the list as it now is (empty when not read back)."""
    if client is None or not values:
        return []
    try:
        pipe = client.pipeline()
        pipe.rpush(key, *(json.dumps(value) for value in values))
        pipe.ltrim(key, -keep, -1)
        pipe.expire(key, LIST_TTL_SECONDS)
        if read_back:
            pipe.lrange(key, 0, -1)
        results = await pipe.execute()
        return [json.loads(row) for row in results[3]] if read_back else []
    except (RedisError, OSError, ValueError) as exc:
        logger.warning("redis append to %s failed: %r", key, exc)
        return []


async def read_list(client: Redis | None, key: str) -> list[Any]:
    if client is None:
        return []
    try:
        return [json.loads(row) for row in await client.lrange(key, 0, -1)]
    except (RedisError, OSError, ValueError) as exc:
        logger.warning("redis read of %s failed: %r", key, exc)
        return []


def now() -> float:
    return round(time.time(), 3)
