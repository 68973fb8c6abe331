"""Drives a run: checks the target, then for each sweep point sends the schedule and collects the records.

Open loop (``--request-rate``): each request is sent at its scheduled time, whatever is still in
flight. Closed loop (``--concurrency N``): N workers each send their next request as soon as their
previous one ends. With ``--duration-s`` no request is sent after the deadline and those still in
flight are cancelled there and counted as ``cancelled``.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from tqdm import tqdm

from edgecloud.loadgen.client import Target, check_reachable, new_session, send
from edgecloud.loadgen.records import CANCELLED, RequestRecord
from edgecloud.loadgen.settings import LoadgenSettings
from edgecloud.loadgen.workload import PlannedRequest, Workload

_Send = Callable[[RequestRecord], Coroutine[None, None, None]]  # sends one request, counting it in flight


@dataclass(frozen=True)
class Point:
    """One run of a sweep: a request rate (open loop) or a concurrency (closed loop)."""

    request_rate: float | None = None
    concurrency: int | None = None

    @property
    def label(self) -> str:
        return f"rate-{self.request_rate:g}" if self.request_rate is not None else f"concurrency-{self.concurrency}"


@dataclass
class PointResult:
    point: Point
    started_at: str  # wall clock, ISO 8601 UTC
    duration_s: float
    records: list[RequestRecord]
    max_in_flight: int


@dataclass
class RunResult:
    served_models: list[str]  # from GET /models; empty if the target lists none
    points: list[PointResult]


def sweep_points(settings: LoadgenSettings) -> list[Point]:
    if settings.concurrency is not None:
        return [Point(concurrency=level) for level in settings.concurrency]
    return [Point(request_rate=rate) for rate in settings.request_rate]


def target_of(settings: LoadgenSettings) -> Target:
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    return Target(settings.base_url, settings.model, api_key, settings.timeout_s, settings.type_hint)


class _InFlight:
    """Counts requests in flight and remembers the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def leave(self) -> None:
        self.now -= 1


class Runner:
    def __init__(self, settings: LoadgenSettings, workload: Workload, session: aiohttp.ClientSession):
        self.settings = settings
        self.workload = workload
        self.session = session
        self.target = target_of(settings)

    async def run_point(self, point: Point) -> PointResult:
        settings = self.settings
        limit, duration = settings.request_limit, settings.duration_s
        started_at = datetime.now(UTC).isoformat()
        in_flight = _InFlight()
        if point.request_rate is not None:
            schedule = list(self.workload.open_loop(point.request_rate, limit, duration))
            total: int | None = len(schedule)
        else:
            total = limit
        with tqdm(total=total, desc=point.label, unit="req", file=sys.stderr, disable=not settings.progress) as bar:
            start = time.perf_counter()
            deadline = None if duration is None else start + duration

            async def one(record: RequestRecord) -> None:
                in_flight.enter()
                try:
                    await send(self.session, self.target, record, start)
                finally:
                    in_flight.leave()
                    bar.update()

            if point.request_rate is not None:
                records = await self._open_loop(schedule, point, start, deadline, one)
            else:
                assert point.concurrency is not None
                records = await self._closed_loop(point.concurrency, point, deadline, one)
            duration_s = time.perf_counter() - start
        for record in records:
            if not record.ok and record.error_kind is None:
                record.fail(CANCELLED, "still in flight at the run's deadline")
        return PointResult(point, started_at, duration_s, records, in_flight.most)

    async def _open_loop(
        self, schedule: list[PlannedRequest], point: Point, start: float, deadline: float | None, one: _Send
    ) -> list[RequestRecord]:
        records: list[RequestRecord] = []
        tasks: list[asyncio.Task[None]] = []
        for planned in schedule:
            assert planned.scheduled_s is not None
            delay = start + planned.scheduled_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            record = RequestRecord(planned, point.label)
            records.append(record)
            tasks.append(asyncio.create_task(one(record)))
        await _finish(tasks, deadline)
        return records

    async def _closed_loop(
        self, concurrency: int, point: Point, deadline: float | None, one: _Send
    ) -> list[RequestRecord]:
        requests = self.workload.closed_loop(self.settings.request_limit)
        records: list[RequestRecord] = []

        async def worker() -> None:
            # One shared generator: next() runs to completion between awaits, so no request is taken twice.
            for planned in requests:
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                record = RequestRecord(planned, point.label)
                records.append(record)
                await one(record)

        await _finish([asyncio.create_task(worker()) for _ in range(concurrency)], deadline)
        return records


async def _finish(tasks: list[asyncio.Task[None]], deadline: float | None) -> None:
    """Wait for ``tasks``; at the deadline cancel those still running."""
    if not tasks:
        return
    timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def run(settings: LoadgenSettings, workload: Workload) -> RunResult:
    """Check the target (``TargetUnreachable`` if it does not answer), then run every sweep point in turn.

    Objects alive at the start leave the garbage collector's view (``gc.freeze``): a full collection over
    everything imported (about 0.1-0.2 s with numba loaded, measured) would otherwise land inside a
    measured request now and then.
    """
    gc.freeze()
    async with new_session() as session:
        served = await check_reachable(session, target_of(settings), settings.preflight_timeout_s)
        runner = Runner(settings, workload, session)
        return RunResult(served, [await runner.run_point(point) for point in sweep_points(settings)])
