"""The affinity key (pure logic, no engine): per task, inherited by spawned tasks, and the order a list of
servers is tried in for a key."""

from __future__ import annotations

import asyncio
import time

from service.runtime.affinity import affinity_scope, current_affinity
from service.runtime.engine_remote import RemoteEngine, engine_urls
from service.runtime.model_files import resolve_model
from service.runtime.settings import Settings


def test_each_request_has_its_own_key_and_its_branches_inherit_it() -> None:
    async def request(seen: list[set[str | None]]) -> None:
        with affinity_scope() as key:
            branches = await asyncio.gather(*(branch() for _ in range(4)))
            seen.append({key, *branches})

    async def branch() -> str | None:
        await asyncio.sleep(0.01)
        return current_affinity()

    async def scenario() -> list[set[str | None]]:
        seen: list[set[str | None]] = []
        await asyncio.gather(request(seen), request(seen))
        assert current_affinity() is None
        return seen

    first, second = asyncio.run(scenario())
    assert len(first) == 1 and len(second) == 1 and first != second  # one key per request, never shared


def test_engine_urls_splits_a_list() -> None:
    assert engine_urls("http://a:1/, http://b:2") == ["http://a:1", "http://b:2"]


def test_a_key_always_prefers_one_server_and_keys_spread() -> None:
    settings = Settings(engine="remote", engine_url="http://a:1,http://b:2,http://c:3")
    engine = RemoteEngine(settings, resolve_model(None, settings.model_cache_dir))
    keys = [f"request-{i}" for i in range(300)]
    firsts = [engine.order(key)[0].url for key in keys]
    assert firsts == [engine.order(key)[0].url for key in keys]  # stable
    counts = {url: firsts.count(url) for url in engine_urls(settings.engine_url)}
    assert all(60 < count < 140 for count in counts.values()), counts
    # a server that failed goes last; the key's other servers keep their order
    preferred = engine.order("request-0")
    preferred[0].down_until = time.monotonic() + 60
    assert engine.order("request-0") == [*preferred[1:], preferred[0]]
    asyncio.run(engine.close())
