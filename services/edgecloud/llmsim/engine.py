"""The simulated inference engine: admission, queueing and the release time of every token.

Plain library code (no HTTP): the server runs it on a ``RealClock``, experiments on a
``VirtualClock``. At most ``max_num_seqs`` requests run at once; the others wait in FIFO order,
and their waiting time adds to their TTFT. A running request releases token k at the absolute
deadline ``start + ttft + tpot_1 + ... + tpot_k``; each TPOT is sampled when its token is
scheduled, with the number of requests running at that moment (the load slowdown).

Tokens already due are released together (one batch), so a lagging process catches up instead
of drifting, and the ``zero`` profile streams without sleeping at all, yielding to the event loop
every ``yield_every`` tokens so that concurrent requests share it fairly.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from edgecloud.core.clock import Clock, sleep_until
from edgecloud.llmsim.latency import LatencyModel
from edgecloud.llmsim.metrics import EngineMetrics
from edgecloud.llmsim.profiles import LatencyProfile


@dataclass(frozen=True)
class EngineRequest:
    prompt_tokens: int
    output_tokens: int
    finish_reason: str = "length"  # reported once every token is out ("stop" or "length")
    seed: int | None = None  # same seed, same jitter
    arrival: float | None = None  # clock time the request arrived; default: when generate() starts


@dataclass
class RequestTiming:
    """What happened to one request, in clock time; filled in while it runs."""

    arrival: float
    started: float | None = None
    first_token: float | None = None
    finished: float | None = None
    output_tokens: int = 0
    finish_reason: str = "abort"

    @property
    def queue_time(self) -> float | None:
        return None if self.started is None else self.started - self.arrival

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def e2e(self) -> float | None:
        return None if self.finished is None else self.finished - self.arrival


class Engine:
    def __init__(
        self,
        profile: LatencyProfile,
        *,
        clock: Clock,
        rng: random.Random,
        metrics: EngineMetrics | None = None,
        yield_every: int = 64,
    ):
        self.profile = profile
        self.model = LatencyModel(profile)
        self._clock = clock
        self._rng = rng
        self._metrics = metrics
        self._yield_every = max(1, yield_every)
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _publish_load(self) -> None:
        if self._metrics is not None:
            self._metrics.set_load(self._running, len(self._waiters))

    async def _acquire(self) -> None:
        """Take a running slot, waiting in FIFO order when all ``max_num_seqs`` are busy."""
        if self._running < self.profile.max_num_seqs and not self._waiters:
            self._running += 1
            self._publish_load()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._publish_load()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over just as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
                self._publish_load()
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                self._publish_load()
                return
        self._running -= 1
        self._publish_load()

    async def generate(self, request: EngineRequest, timing: RequestTiming | None = None) -> AsyncGenerator[int, None]:
        """Yield how many tokens are released at each step, at their simulated times.

        The counts add up to ``request.output_tokens`` unless the caller stops early (an abort).
        ``timing``, if given, is filled in as the request runs.
        """
        clock, model, metrics = self._clock, self.model, self._metrics
        timing = timing or RequestTiming(arrival=clock.now())
        if request.arrival is not None:
            timing.arrival = request.arrival
        rng = random.Random(request.seed) if request.seed is not None else random.Random(self._rng.getrandbits(64))
        # The simulator's own work on the request so far (tokenizing, choosing the answer) is part of the profile's
        # TTFT, as a real server's is of a measured one: the first token is due that much sooner.
        own_work = clock.now() - timing.arrival
        await self._acquire()
        started = timing.started = clock.now()
        last_release = started
        due = 0  # tokens whose deadline has passed, not yet released

        def release() -> int:
            nonlocal last_release, due
            now = clock.now()
            if timing.first_token is None:
                timing.first_token = now
                if metrics is not None:
                    metrics.record_first_token(request.prompt_tokens, started - timing.arrival, now - timing.arrival)
                    metrics.record_inter_token(0.0, due - 1)
            elif metrics is not None:
                metrics.record_inter_token(now - last_release, due)
            last_release = now
            count, due = due, 0
            timing.output_tokens += count
            return count

        try:
            instant = self.profile.is_instant
            deadline = started + max(model.ttft(rng) - own_work, 0.0)
            for index in range(request.output_tokens):
                if not instant:
                    if index:
                        deadline += model.tpot(rng, self._running)
                    if deadline > clock.now():
                        if due:
                            yield release()
                        await sleep_until(clock, deadline)
                due += 1
                if due >= self._yield_every:
                    yield release()
                    await clock.sleep(0)  # let other requests run: nothing else here waits
            if due:
                yield release()
            timing.finish_reason = request.finish_reason
        finally:
            timing.finished = clock.now()
            self._release()
            if metrics is not None:
                metrics.record_finished(
                    timing.finish_reason, timing.output_tokens, timing.finished - timing.arrival, timing.ttft
                )
