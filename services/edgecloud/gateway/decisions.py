"""The gateway's side of the offloading decision: ask the decision service, or decide by the rule.

``DecisionClient`` posts x = (service type, estimated tokens) to the decision service's
``/v1/decisions`` (paper eqs. 5-8) and maps its ``local``/``offload`` to a route. When the service
does not answer within ``decision_timeout_s`` (or is not configured), the gateway applies the same
last-resort rule the decision service uses (``rule_action``) and says so (source ``gateway_fallback``).
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
from edgecloud.core.headers import JSON_CONTENT
from edgecloud.core.vocabulary import Action, ServiceType, TaskState, rule_action
from edgecloud.core.wire import DecisionRequest, DecisionResponse
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
    def __init__(self, settings: GatewaySettings):
        self.url = settings.decision_url
        self.policy = settings.decision_policy
        self.cell = settings.cell
        self._headers = {**JSON_CONTENT, **bearer_headers(settings.decision_api_key)}
        self._timeout = aiohttp.ClientTimeout(total=settings.decision_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._outage_logged = False

    def _log_outage(self, reason: str) -> None:
        """Once per outage, not per request."""
        if not self._outage_logged:
            logger.warning("decision service unavailable (%s); deciding by the rule until it answers", reason)
            self._outage_logged = True

    async def start(self) -> None:
        if self.url:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def decide(self, service_type: ServiceType, estimated_tokens: int) -> RouteDecision:
        started = time.perf_counter()
        if self._session is not None:
            body = DecisionRequest(
                service_type=service_type, estimated_tokens=estimated_tokens, cell=self.cell, policy=self.policy
            )
            try:
                async with self._session.post(
                    f"{self.url}/v1/decisions", data=body.model_dump_json(), headers=self._headers
                ) as response:
                    if response.status == 200:
                        answer = DecisionResponse.model_validate_json(await response.read())
                        self._outage_logged = False
                        return RouteDecision(
                            ROUTE_OF_ACTION[answer.decision],
                            answer.source.value,
                            time.perf_counter() - started,
                            answer.pool_version,
                        )
                    self._log_outage(f"it answered {response.status}")
            except (TimeoutError, aiohttp.ClientError, ValidationError) as exc:
                self._log_outage(type(exc).__name__)
        action = rule_action(TaskState.of(service_type, estimated_tokens))
        return RouteDecision(ROUTE_OF_ACTION[action], GATEWAY_FALLBACK, time.perf_counter() - started)


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
