"""Closing the loop: each served request becomes an experience for the decision service's pool.

The gateway measures the generation time (arrival to last token relayed, eq. 3's t_gen as the base
station sees it); the air interface measures the transmission time (eq. 1's t_tran: what the radio
and the backhaul added after the gateway's last byte) and reports it with the request's id
(``POST /v1/air-reports``). ``ExperienceWriter`` joins the two by request id, whichever comes first,
and posts the experience to the decision service, which computes the reward (eq. 10) from these
measurements. Requests that did not come over the air have no radio: their transmission time is 0.

Nothing here delays a user's answer: experiences wait in a bounded queue and one background task
posts them in order, in batches (``POST /v1/experiences/batch``: whatever waited, up to
``experience_batch_size``, gathered for ``experience_batch_wait_s`` after the first), retrying while the
decision service is down. A batch that got no answer is sent again as it was, with the same experiences
in the same order: each carries an ``experience_id`` made when it was queued, so the ones the service
had recorded before the reply was lost are skipped there (``duplicate``), not counted twice. Only when
the queue overflows is the oldest waiting experience dropped (never one of the batch being sent), and a
request whose air report never comes is dropped rather than guessed; both are counted. At a stop, what
still waits is posted once more within ``experience_stop_timeout_s``; what does not go is written to the
spool file (``experience_spool``, ``core.spool``), which the next start posts first, or without one counted
as lost. While the decision service is down the same file is kept current at every retry
(``core.spool.OutageSpool``), so a crash loses only what arrived within the last retry interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import ValidationError

from edgecloud.core.auth import bearer_headers
from edgecloud.core.connections import IDLE_CLIENT_CONNECTION_S
from edgecloud.core.headers import JSON_CONTENT
from edgecloud.core.spool import OutageSpool, read_spool, write_spool
from edgecloud.core.vocabulary import Action, DecisionSource, ServiceType
from edgecloud.core.wire import (
    CLIENT_CHOICES_CELL_SUFFIX,
    AirReport,
    ExperienceBatch,
    ExperienceBatchResponse,
    ExperienceRequest,
)
from edgecloud.gateway.metrics import GatewayMetrics
from edgecloud.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

# The decision service's sources are sent with an experience; ours (gateway_fallback, backend_down, client) not.
DECISION_SOURCES = frozenset(DecisionSource)
RETRY_INTERVAL_S = 1.0  # wait before posting again after the decision service failed
SWEEP_INTERVAL_S = 1.0  # how often unmatched halves are checked for expiry
POST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServedRequest:
    """What the gateway knows when it has relayed a request's last byte."""

    request_id: str
    service_type: ServiceType
    estimated_tokens: int
    action: Action  # the side that actually served it (after any retry)
    source: str
    generation_s: float
    quality_met: bool
    route: str
    model: str
    client_choice: bool = False  # the client pinned the route or model, or lowered its quality requirement


@dataclass(frozen=True)
class Pending:
    """An experience waiting to be posted: the body, id included, sent for it, and the route that served it."""

    route: str
    body: ExperienceRequest

    def to_record(self) -> dict[str, Any]:
        return {"route": self.route, "experience": self.body.model_dump(mode="json", exclude_none=True)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Pending:
        return cls(record["route"], ExperienceRequest.model_validate(record["experience"]))


class ExperienceWriter:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics):
        self.url = settings.decision_url
        self.policy = settings.decision_policy
        self.cell = settings.cell
        self.learn_from_client_choices = settings.learn_from_client_choices
        self._headers = {**JSON_CONTENT, **bearer_headers(settings.decision_api_key)}
        self.capacity = settings.experience_queue_size
        self.batch_size = min(settings.experience_batch_size, settings.experience_queue_size)
        self.batch_wait_s = settings.experience_batch_wait_s
        self.air_timeout_s = settings.air_report_timeout_s
        self.stop_timeout_s = settings.experience_stop_timeout_s
        self.spool_path = settings.experience_spool
        self.metrics = metrics
        self._queue: deque[Pending] = deque()
        self._sending: list[Pending] = []  # the batch being posted, out of the queue until it is answered
        self._waiting_for_air: OrderedDict[str, tuple[ServedRequest, float]] = OrderedDict()
        self._early_reports: OrderedDict[str, tuple[AirReport, float]] = OrderedDict()
        self._outage_spool = OutageSpool(settings.experience_spool, logger)
        self._arrived = 0  # experiences that joined the queue so far, for the outage spool's appends
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._outage_logged = False

    async def start(self) -> None:
        if not self.url:
            return
        connector = aiohttp.TCPConnector(keepalive_timeout=IDLE_CLIENT_CONNECTION_S)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S))
        self._queue.extendleft(reversed(read_spool(self.spool_path, Pending.from_record, "experiences", logger)))
        if self._queue:
            self._outage_spool.keep(self.waiting(), self._arrived, Pending.to_record)  # until they are posted
            self.metrics.experience_queue.set(self.queued)
            self._wake.set()
        self._tasks = [asyncio.create_task(self._post_forever()), asyncio.create_task(self._sweep_forever())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._post_at_stop()
            await self._session.close()
            self._session = None

    async def _post_at_stop(self) -> None:
        """What still waits (the batch cut off by the stop first, the same ids again) gets one more bounded try."""
        left = self.waiting()
        self._sending, self._queue = [], deque()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.stop_timeout_s):
                while left and await self._post(left[: self.batch_size]):
                    left = left[self.batch_size :]
        if left:
            kept = write_spool(self.spool_path, [pending.to_record() for pending in left], "experiences", logger)
            self.metrics.experiences.labels("spooled_at_stop" if kept else "dropped_at_stop").inc(len(left))
        self.metrics.experience_queue.set(0)

    @property
    def queued(self) -> int:
        return len(self._sending) + len(self._queue)

    def waiting(self) -> list[Pending]:
        """Every experience not yet stored, in the order they go: the batch being sent, then the queue."""
        return [*self._sending, *self._queue]

    def served(self, request: ServedRequest, over_the_air: bool) -> None:
        """A request finished at the gateway; over the air, its transmission time is still to come."""
        if not self.url:
            return
        if not over_the_air:
            self._enqueue(request, 0.0)
            return
        early = self._early_reports.pop(request.request_id, None)
        if early is not None:
            self._enqueue(request, early[0].transmission_s)
            return
        self._remember(self._waiting_for_air, request.request_id, (request, time.monotonic() + self.air_timeout_s))

    def air_report(self, report: AirReport) -> None:
        if not self.url:
            return
        waiting = self._waiting_for_air.pop(report.request_id, None)
        if waiting is not None:
            self._enqueue(waiting[0], report.transmission_s)
            return
        self._remember(self._early_reports, report.request_id, (report, time.monotonic() + self.air_timeout_s))

    def _remember(self, table: OrderedDict[str, Any], request_id: str, entry: Any) -> None:
        table[request_id] = entry
        if len(table) > self.capacity:
            table.popitem(last=False)
            self.metrics.experiences.labels("dropped_unmatched").inc()

    def _enqueue(self, request: ServedRequest, transmission_s: float) -> None:
        try:
            body = self._body(request, transmission_s)
        except ValidationError as error:  # a measurement no decision service would take (a day-long delay)
            logger.warning("experience of %s not sent: %s", request.request_id, error)
            self.metrics.experiences.labels("refused").inc()
            return
        self._queue.append(Pending(request.route, body))
        self._arrived += 1
        while self.queued > self.capacity and self._queue:
            self._queue.popleft()
            self.metrics.experiences.labels("dropped_overflow").inc()
        self.metrics.experience_queue.set(self.queued)
        self._wake.set()

    def _body(self, request: ServedRequest, transmission_s: float) -> ExperienceRequest:
        apart = request.client_choice and not self.learn_from_client_choices
        return ExperienceRequest(
            service_type=request.service_type,
            estimated_tokens=request.estimated_tokens,
            cell=f"{self.cell}{CLIENT_CHOICES_CELL_SUFFIX}" if apart else self.cell,
            policy=self.policy,
            decision=request.action,
            transmission_s=transmission_s,
            generation_s=request.generation_s,
            quality_met=request.quality_met,
            source=DecisionSource(request.source) if request.source in DECISION_SOURCES else None,
            request_id=request.request_id,
            experience_id=uuid.uuid4().hex,
        )

    async def _post_forever(self) -> None:
        while True:
            if not self._sending:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                if len(self._queue) < self.batch_size and self.batch_wait_s > 0:
                    await asyncio.sleep(self.batch_wait_s)  # gather what the next requests bring
                count = min(self.batch_size, len(self._queue))
                self._sending = [self._queue.popleft() for _ in range(count)]
            if await self._post(self._sending):
                self._sending = []
                self.metrics.experience_queue.set(self.queued)
                if not self.queued:
                    self._outage_spool.clear()
            else:
                self._outage_spool.keep(self.waiting(), self._arrived, Pending.to_record)
                await asyncio.sleep(RETRY_INTERVAL_S)

    async def _post(self, batch: list[Pending]) -> bool:
        """True when the batch is stored (or refused for good); False to send it again later, as it is."""
        assert self._session is not None
        body = ExperienceBatch(experiences=[pending.body for pending in batch])
        try:
            async with self._session.post(
                f"{self.url}/v1/experiences/batch",
                data=body.model_dump_json(exclude_none=True),
                headers=self._headers,
            ) as response:
                if response.status >= 500:
                    self._log_outage(f"it answered {response.status}")
                    return False
                if response.status != 200:
                    logger.warning(
                        "decision service refused %d experiences (%s): %s",
                        len(batch),
                        response.status,
                        await response.text(),
                    )
                    self.metrics.experiences.labels("refused").inc(len(batch))
                    return True
                answer = ExperienceBatchResponse.model_validate_json(await response.read())
        except (TimeoutError, aiohttp.ClientError, ValidationError) as exc:
            self._log_outage(type(exc).__name__)
            return False
        if len(answer.results) != len(batch):
            self._log_outage(f"it answered {len(answer.results)} results for {len(batch)} experiences")
            return False
        self._outage_logged = False
        for pending, result in zip(batch, answer.results, strict=True):
            self.metrics.experiences.labels("buffered" if result.buffered else "stored").inc()
            self.metrics.reward.labels(pending.route, pending.body.service_type.value).observe(result.reward)
        return True

    def _log_outage(self, reason: str) -> None:
        """Once per outage, not at every retry."""
        if not self._outage_logged:
            logger.warning("experiences wait: decision service unavailable (%s); retrying every second", reason)
            self._outage_logged = True

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = time.monotonic()
            self._expire(self._waiting_for_air, now, "dropped_no_air_report")
            self._expire(self._early_reports, now, "dropped_orphan_report")

    def _expire(self, table: OrderedDict[str, Any], now: float, outcome: str) -> None:
        """Drop the halves whose partner did not come in time (oldest first: entries are in arrival order)."""
        while table and next(iter(table.values()))[1] < now:
            table.popitem(last=False)
            self.metrics.experiences.labels(outcome).inc()
