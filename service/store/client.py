"""The one way a process of ours opens Redis: with the settings' URL and timeouts, so no call can hang on a
Redis that accepts connections and never answers. The app builds one client for its lifetime; the entry
points (the start-up key check, the keys CLI) build one for their single task."""

from __future__ import annotations

from redis.asyncio import Redis


def connect(url: str, timeout_seconds: float) -> Redis:
    return Redis.from_url(url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds)
