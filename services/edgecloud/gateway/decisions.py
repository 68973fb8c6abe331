"""The gateway's side of the offloading decision: ask the decision service, or decide by the rule.

``DecisionClient`` posts x = (service type, estimated tokens) to the decision service's
``/v1/decisions`` (paper eqs. 5-8) and maps its ``local``/``offload`` to a route. In the steady state
it answers from its memory of the service's answers (``decision_memory.py``: same x, pool version and
scorer; source ``cache``, or ``fallback`` for the pool's example while the service's LLM cannot score) without
that round trip, and asks the service only to explore, on a miss or
when the memory cannot be checked. When the service does not answer within ``decision_timeout_s`` (or
is not configured), the gateway applies the same last-resort rule the decision service uses
(``rule_action``) and says so (source ``gateway_fallback``); a remembered answer it wanted to explore
from stands instead.
``BackendHealth`` remembers a backend that just failed (no connection, or no first token in time), so
that new requests are routed around it for a while instead of each paying a failed attempt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import aiohttp
from pydantic import ValidationError

from edgecloud.core.auth import bearer_headers
from edgecloud.core.connections import IDLE_CLIENT_CONNECTION_S
from edgecloud.core.headers import JSON_CONTENT
from edgecloud.core.vocabulary import Action, ServiceType, TaskState, rule_action
from edgecloud.core.wire import DecisionRequest, DecisionResponse
from edgecloud.gateway.decision_memory import DecisionMemory, Remembered
from edgecloud.gateway.metrics import GatewayMetrics
from edgecloud.gateway.settings import GatewaySettings, Route

logger = logging.getLogger(__name__)

ROUTE_OF_ACTION = {Action.LOCAL: Route.EDGE, Action.OFFLOAD: Route.CLOUD}
ACTION_OF_ROUTE = {route: action for action, route in ROUTE_OF_ACTION.items()}
# Where a route came from when the decision service did not give it.
GATEWAY_FALLBACK = "gateway_fallback"  # the decision service did not answer: the rule
BACKEND_DOWN = "backend_down"  # the decided backend is down: the other one
CLIENT_CHOICE = "client"  # x-route header or a backend's model name


@dataclass(frozen=True)
class RouteDecision:
    route: Route
    source: str  # the decision service's source (llm, explore, cache, fallback, baseline) or one of ours
    latency_s: float
    pool_version: int | None = None

    @property
    def action(self) -> Action:
        return ACTION_OF_ROUTE[self.route]


class DecisionClient:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics | None = None):
        self.url = settings.decision_url
        self.policy = settings.decision_policy
        self.cell = settings.cell
        self.metrics = metrics or GatewayMetrics()
        self._headers = {**JSON_CONTENT, **bearer_headers(settings.decision_api_key)}
        self._timeout = aiohttp.ClientTimeout(total=settings.decision_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._outage_logged = False
        remembers = settings.decision_memory and settings.decision_redis_url and settings.decision_url
        self.memory = (
            DecisionMemory(
                settings.decision_redis_url,
                settings.cell,
                settings.decision_policy,
                timeout_s=settings.decision_memory_timeout_s,
                retry_interval_s=settings.redis_retry_interval_s,
            )
            if remembers
            else None
        )

    def _log_outage(self, reason: str) -> None:
        """Once per outage, not per request."""
        if not self._outage_logged:
            logger.warning("decision service unavailable (%s); deciding by the rule until it answers", reason)
            self._outage_logged = True

    async def start(self) -> None:
        if self.url:
            connector = aiohttp.TCPConnector(keepalive_timeout=IDLE_CLIENT_CONNECTION_S)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        if self.memory is not None:
            await self.memory.start()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.memory is not None:
            await self.memory.close()

    async def decide(self, service_type: ServiceType, estimated_tokens: int) -> RouteDecision:
        started = time.perf_counter()
        state = TaskState.of(service_type, estimated_tokens)
        remembered, draw = await self._recall(state)
        if remembered is not None and draw is None:
            return _remembered(remembered, time.perf_counter() - started)
        answer = await self._ask(service_type, estimated_tokens, draw)
        if answer is not None:
            if self.memory is not None:
                self.memory.learn(state, answer)
            route = ROUTE_OF_ACTION[answer.decision]
            return RouteDecision(route, answer.source.value, time.perf_counter() - started, answer.pool_version)
        if remembered is not None and self.memory is not None:
            # The draw asked the service to explore and it did not answer: the remembered answer stands, a step of
            # the schedule the service has not seen.
            self.memory.unreported += 1
            return _remembered(remembered, time.perf_counter() - started)
        return RouteDecision(ROUTE_OF_ACTION[rule_action(state)], GATEWAY_FALLBACK, time.perf_counter() - started)

    async def _recall(self, state: TaskState) -> tuple[tuple[Remembered, int] | None, float | None]:
        """The remembered answer and pool version for ``state`` if the memory holds one it can check, and
        the exploration draw that sends this decision to the service anyway (None: the memory answers)."""
        memory = self.memory
        if memory is None or self._session is None:
            return None, None
        view = await memory.view()
        remembered = memory.recall(view, state) if view is not None else None
        if view is None or remembered is None:
            self.metrics.decision_memory.labels("off" if view is None else "miss").inc()
            return None, None
        draw = memory.explores()
        if draw is None:
            memory.unreported += 1
        self.metrics.decision_memory.labels("hit" if draw is None else "explore").inc()
        return (remembered, view.version), draw

    async def _ask(
        self, service_type: ServiceType, estimated_tokens: int, draw: float | None
    ) -> DecisionResponse | None:
        """The decision service's answer, or None if it gave none in time; reports the remembered decisions."""
        if self._session is None:
            return None
        memory = self.memory
        reported = memory.unreported if memory is not None else 0
        if memory is not None:
            memory.unreported = 0  # taken by this request; concurrent ones report only what comes after
        body = DecisionRequest(
            service_type=service_type,
            estimated_tokens=estimated_tokens,
            cell=self.cell,
            policy=self.policy,
            explore_draw=draw,
            remembered=reported,
        )
        try:
            async with self._session.post(
                f"{self.url}/v1/decisions", data=body.model_dump_json(exclude_defaults=True), headers=self._headers
            ) as response:
                if response.status == 200:
                    answer = DecisionResponse.model_validate_json(await response.read())
                    self._outage_logged = False
                    return answer
                self._log_outage(f"it answered {response.status}")
        except (TimeoutError, aiohttp.ClientError, ValidationError) as exc:
            self._log_outage(type(exc).__name__)
        if memory is not None:
            memory.unreported += reported  # not told: the next request reports them
        return None


def _remembered(remembered: tuple[Remembered, int], latency_s: float) -> RouteDecision:
    answer, version = remembered
    return RouteDecision(ROUTE_OF_ACTION[answer.action], answer.source.value, latency_s, version)


class BackendHealth:
    """A circuit breaker per backend: down after a failure, then one probe at a time until one succeeds.

    A backend that failed (refused the connection, or sent no token within the first-token timeout) is
    down for ``down_for_s``: auto requests go to the other side, pinned ones are refused at once. When
    that time is up, the next request that asks is let through as the probe and everyone else still
    routes around it for ``probe_s`` (the probe's longest wait); the probe's success closes the breaker,
    its failure opens it again.
    """

    def __init__(self, down_for_s: float, probe_s: float = 0.0):
        self.down_for_s = down_for_s
        self.probe_s = probe_s
        self._down_until: dict[Route, float] = {}

    def failed(self, route: Route) -> None:
        self._down_until[route] = time.monotonic() + self.down_for_s

    def succeeded(self, route: Route) -> None:
        self._down_until.pop(route, None)

    def is_down(self, route: Route) -> bool:
        """True while ``route`` is to be avoided; False admits the caller, as the probe if it was down."""
        until = self._down_until.get(route)
        if until is None:
            return False
        now = time.monotonic()
        if until > now:
            return True
        self._down_until[route] = now + self.probe_s  # this caller probes; the others wait for its answer
        return False

    def retry_after_s(self, route: Route) -> float:
        """Seconds until ``route`` may be tried again (0 when it is not down)."""
        return max(0.0, self._down_until.get(route, 0.0) - time.monotonic())
