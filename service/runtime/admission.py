"""Admission control of one replica: a bounded number of engine sequences in flight, a bounded wait queue, and
a fair share of the sequences per API key.

Why a fair queue here rather than vLLM's `priority` scheduler: it works the same for the in-process and the
remote engine, it can refuse at once (a 429 with Retry-After) instead of letting the engine's own queue grow
without bound, and it shrinks a wide call to its key's share (as the budget already shrinks calls) instead of
preempting and recomputing sequences, which on a CPU engine costs more than it saves.

The unit is one engine sequence (a sample being generated). A call asks for `want` sequences; it is granted at
once if nobody waits and there is room, else it waits. Whenever sequences free up, the waiting call whose key
holds the fewest sequences goes first (max-min fairness, FIFO among equals). No key may hold more than
`key_share` of the capacity even when alone, nor more than capacity / active keys while others wait, so a small
request never queues behind one huge call. A plain OpenAI call must get all its `n` sequences at once (it
waits for them); one wider than the whole capacity runs only when nothing else does.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from service.runtime.errors import Overloaded


@dataclass
class _Waiter:
    key: str
    want: int
    exact: bool
    continuing: bool
    patient: bool
    order: int
    future: asyncio.Future[int] = field(repr=False)


class Admission:
    """Per-replica sequence slots (created once in the app's state, never shared between apps)."""

    def __init__(self, capacity: int, max_waiting: int, max_wait_seconds: float, key_share: float) -> None:
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.max_wait_seconds = max_wait_seconds
        self.key_share = key_share
        self.used = 0
        self.held: dict[str, int] = {}
        self.waiting: list[_Waiter] = []
        self._order = itertools.count()

    def _limit(self, key: str, want: int, exact: bool) -> int:
        """How many sequences `key` may hold in all right now."""
        active = set(self.held) | {waiter.key for waiter in self.waiting}
        active.add(key)
        limit = max(1, int(self.capacity * self.key_share))
        if len(active) > 1:
            limit = min(limit, max(1, self.capacity // len(active)))
        return max(limit, want) if exact else limit

    def _grantable(self, key: str, want: int, exact: bool) -> int:
        if exact and want > self.capacity:  # wider than the whole engine: only when nothing else runs
            return want if self.used == 0 else 0
        room = min(self.capacity - self.used, self._limit(key, want, exact) - self.held.get(key, 0))
        if exact:
            return want if room >= want else 0
        return max(0, min(want, room))

    def _take(self, key: str, count: int) -> int:
        self.used += count
        self.held[key] = self.held.get(key, 0) + count
        return count

    async def acquire(
        self,
        key: str,
        want: int,
        exact: bool = False,
        deadline: float | None = None,
        continuing: bool = False,
        patient: bool = False,
    ) -> int:
        """Sequences granted to one call of `key` (between 1 and `want`; exactly `want` if `exact`).

        A new request's first call is refused at once when the queue is full, and after `max_wait_seconds` of
        waiting while the engine is full: past saturation, shedding it early keeps the admitted ones within their
        latency (a call that waits only for its own key's share, the engine having room, waits on). A call of a
        request that already runs (`continuing`) goes ahead of new ones and waits up to its own deadline,
        since its request's work so far is sunk. A `patient` call (a background job: nobody waits on it) is
        never refused for the queue and waits up to its deadline too, behind the others. Raises Overloaded when
        refused."""
        if not exact:
            want = min(want, self.capacity)
        if not self.waiting:
            granted = self._grantable(key, want, exact)
            if granted:
                return self._take(key, granted)
        waits_to_deadline = continuing or patient
        if not waits_to_deadline and self._new_waiting() >= self.max_waiting:
            raise Overloaded(
                f"The engine is busy: {self.used} sequences in flight and {len(self.waiting)} calls waiting.",
                "admission_queue_full",
                retry_after=1.0,
            )
        waiter = _Waiter(
            key,
            want,
            exact,
            continuing,
            patient,
            next(self._order),
            asyncio.get_running_loop().create_future(),
        )
        self.waiting.append(waiter)
        started = time.monotonic()
        last_chance = started + (self.max_wait_seconds if deadline is None else max(deadline - started, 0.0))
        shed_at = last_chance if waits_to_deadline else min(started + self.max_wait_seconds, last_chance)
        try:
            while True:
                try:
                    async with asyncio.timeout(max(shed_at - time.monotonic(), 0.0)):
                        return await asyncio.shield(waiter.future)
                except TimeoutError:
                    if waiter.future.done():  # granted at the very moment it gave up
                        return waiter.future.result()
                    if self.used >= self.capacity or time.monotonic() >= last_chance:
                        raise
                    # The engine has room: the call waits only for its own key's share to free up, which is
                    # fairness, not overload, so it is not shed; it waits on, up to its deadline.
                    shed_at = min(time.monotonic() + self.max_wait_seconds, last_chance)
        except BaseException as exc:
            if waiter in self.waiting:
                self.waiting.remove(waiter)
                self._dispatch()  # one key fewer may widen the others' share
            elif waiter.future.done():  # granted at the very moment it was cancelled
                self.release(key, waiter.future.result())
            if isinstance(exc, TimeoutError):
                raise Overloaded(
                    f"The engine stayed busy for {time.monotonic() - started:.1f} s; this call was not admitted.",
                    "admission_wait_timeout",
                    retry_after=1.0,
                ) from None
            raise

    def release(self, key: str, count: int) -> None:
        """A call of `key` ended (or shrank); its sequences go to whoever waits."""
        if count <= 0:
            return
        self.used -= count
        left = self.held.get(key, 0) - count
        if left > 0:
            self.held[key] = left
        else:
            self.held.pop(key, None)
        self._dispatch()

    def _new_waiting(self) -> int:
        return sum(not (waiter.continuing or waiter.patient) for waiter in self.waiting)

    def _priority(self, waiter: _Waiter) -> tuple[bool, bool, int, int]:
        """Running requests' calls first, patient (background) calls last, then the key holding fewest
        sequences, then first come."""
        return (not waiter.continuing, waiter.patient, self.held.get(waiter.key, 0), waiter.order)

    def _dispatch(self) -> None:
        progressed = True
        while progressed and self.waiting and self.used < self.capacity:
            progressed = False
            for waiter in sorted(self.waiting, key=self._priority):
                granted = self._grantable(waiter.key, waiter.want, waiter.exact)
                if granted:
                    self.waiting.remove(waiter)
                    waiter.future.set_result(self._take(waiter.key, granted))
                    progressed = True
                    break
