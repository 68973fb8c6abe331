"""The channel emulator as a plain library: users in a cell, a scheduler, and paced answers.

``AirService`` builds the radio model, cell, air interface and pacer from the settings, attaches
users on their first request, forwards requests to the gateway and wraps each answer in a
``PacedAnswer``. ``app.py`` maps its results to HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
from collections import Counter
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

import numpy as np

from edgecloud.channel import slot_kernel
from edgecloud.channel.air import AirInterface
from edgecloud.channel.cell import Cell
from edgecloud.channel.metrics import ChannelMetrics
from edgecloud.channel.pacing import Pacer
from edgecloud.channel.protocol import CellReport, UePlacement, UeReport
from edgecloud.channel.radio.base import ChannelModel
from edgecloud.channel.radio.constant import ConstantCapacityChannel
from edgecloud.channel.radio.model import RadioModel
from edgecloud.channel.radio.params import load_radio_params
from edgecloud.channel.relay import DeliveredTiming, GatewayClient, Outcome, PacedAnswer, response_headers
from edgecloud.channel.schedulers import make_scheduler
from edgecloud.channel.settings import ChannelModelName, ChannelSettings
from edgecloud.core.auth import presented_key
from edgecloud.core.clock import Clock, RealClock
from edgecloud.core.errors import BadRequestError, NotFoundError, ServiceError
from edgecloud.core.headers import (
    AIR_INTERFACE_HEADER,
    CHANNEL_BACKHAUL_MS_HEADER,
    CHANNEL_USER_HEADER,
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    SERVICE_TYPE_HEADER,
)
from edgecloud.core.vocabulary import ServiceType
from edgecloud.core.wire import AirReport

# Labels from the gateway's headers: what they may say; anything else is "other" (bounded label sets).
KNOWN_ROUTES = frozenset({"edge", "cloud"})
KNOWN_SERVICE_TYPES = frozenset(service_type.value for service_type in ServiceType)
AIR_INTERFACE_NAME = "channel-emulator"
# 5th percentile: the cell-edge user throughput of 3GPP evaluations (TR 36.814 / ITU-R M.2412).
CELL_EDGE_PERCENTILE = 5
MAX_USER_NAME_LENGTH = 64  # of a client-given user name
KEY_ID_HEX = 12  # hex digits of SHA-256 that name a key's client (48 bits: unique among any realistic key set)


class CellFullError(ServiceError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    error_type = "server_error"


class TooManyUsersError(ServiceError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    error_type = "rate_limit_error"


@dataclass(frozen=True)
class RadioUser:
    """A user of the cell and who stands behind it: an API key's id, a client address (None: not known)."""

    user_id: str
    key: str | None
    address: str | None


def make_channel(settings: ChannelSettings, rng: np.random.Generator) -> ChannelModel:
    """The radio model the settings name; 'constant' borrows the radio file's numerology."""
    overrides = dict(settings.radio_overrides)
    if settings.channel_model is not ChannelModelName.CONSTANT:
        overrides["scenario"] = settings.channel_model.value
    params = load_radio_params(settings.radio_file, **overrides)
    if settings.channel_model is ChannelModelName.CONSTANT:
        return ConstantCapacityChannel(
            settings.constant_capacity_bps, params.num_rbs, params.rb_bandwidth_hz, params.slot_duration_s
        )
    return RadioModel(params, rng)


def make_cell(settings: ChannelSettings) -> Cell:
    """The cell the settings describe, seeded: the live emulator's and the virtual-time experiments'."""
    channel = make_channel(settings, np.random.default_rng(settings.seed))
    stats_window_slots = settings.stats_window_s / channel.slot_duration_s
    return Cell(channel, make_scheduler(settings.scheduler), settings.pf_window_slots, stats_window_slots)


@dataclass
class Answer:
    """What the HTTP layer sends back: a status, headers and a body that may take time to arrive."""

    status: int
    headers: dict[str, str]
    content: AsyncGenerator[bytes, None] | bytes = field(repr=False)
    media_type: str | None = None


class AirService:
    def __init__(self, settings: ChannelSettings, metrics: ChannelMetrics, clock: Clock | None = None):
        self.settings = settings
        self.metrics = metrics
        self.clock = clock or RealClock()
        self.cell = make_cell(settings)
        self.air = AirInterface(self.cell, start_time=self.clock.now())
        self.pacer = Pacer(self.air, self.clock, settings.tick_s)
        self.gateway = GatewayClient(settings)
        self._active_streams: Counter[str] = Counter()
        self._owners: dict[str, tuple[str | None, str | None]] = {}  # user id: (its key's id, its address)
        self._reports: set[asyncio.Task[None]] = set()
        metrics.watch_cell(self._cell_gauges)

    async def start(self) -> None:
        if self.cell.compiled:
            slot_kernel.compile_ahead()  # before serving: a first compilation would stall the pacer for seconds
        # Out of the collector's view: a full collection over numba's objects pauses the pacer ~0.2 s (measured).
        gc.freeze()
        self.pacer.start()
        await self.gateway.start()

    async def close(self) -> None:
        await self.pacer.close()
        await self.gateway.close()

    # --- users -------------------------------------------------------------------------------

    def user_of(self, headers: Mapping[str, str], body: bytes, client_host: str | None) -> RadioUser:
        """Who a request's answer is paced for: the name the client gives, within the client that gives it.

        A client names its users (the user header, else the OpenAI ``user`` field of the body); the
        client itself is its API key (a hash: the key never appears) or, without one, its address. So
        ``alice`` of one client is never ``alice`` of another, and no client adds bytes to another's queue.
        """
        address = f"ip:{client_host or 'unknown'}"
        named = headers.get(self.settings.user_header)
        if named and self.settings.trust_user_header:
            return RadioUser(named[:MAX_USER_NAME_LENGTH], key=None, address=address)
        if not named:
            try:
                user = json.loads(body).get("user")
            except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, nested too deep
                user = None
            named = user if isinstance(user, str) else None
        key = presented_key(headers.get("authorization"))
        client = address if key is None else f"key:{hashlib.sha256(key.encode()).hexdigest()[:KEY_ID_HEX]}"
        user_id = client if not named else f"{named[:MAX_USER_NAME_LENGTH]}@{client}"
        return RadioUser(user_id, key=None if key is None else client, address=address)

    def ensure_attached(self, user: RadioUser) -> None:
        """Attach a user if it is not yet: within its key's and its address's limits, evicting an idle user
        (never one with an answer in flight) when the cell is full."""
        if user.user_id in self.cell.users:
            return
        for owner, limit, what in ((user.key, self.settings.max_ues_per_key, "API key"),
                                   (user.address, self.settings.max_ues_per_address, "address")):  # fmt: skip
            if owner is None:
                continue
            owned = [user_id for user_id, owners in self._owners.items() if owner in owners]
            if len(owned) >= limit:  # at its limit, a client's new user replaces its own idle one
                self._evict_one(
                    owned, TooManyUsersError(f"This {what} has {limit} radio users with answers in flight.")
                )
        if len(self.cell.users) >= self.settings.max_ues:
            self._evict_one(list(self.cell.users), CellFullError(f"The cell is full: {self.settings.max_ues} users "
                                                                "have answers in flight."))  # fmt: skip
        self.cell.attach(user.user_id)
        self._owners[user.user_id] = (user.key, user.address)

    def _detach(self, user_id: str) -> None:
        self.cell.detach(user_id)
        self._owners.pop(user_id, None)

    def _evict_one(self, among: list[str], if_none_idle: ServiceError) -> None:
        """Detach the longest-idle of ``among`` (never a user with an answer in flight), else raise."""
        idle = [self.cell.users[user_id] for user_id in among if not self._active_streams[user_id]]
        if not idle:
            raise if_none_idle
        self._detach(min(idle, key=lambda user: self.cell.last_active_slot(user.user_id)).user_id)

    def place(self, user_id: str, placement: UePlacement) -> UeReport:
        """Move a user (attaching it first); a position outside the layout is refused."""
        attached_here = user_id not in self.cell.users
        self.ensure_attached(RadioUser(user_id, key=None, address=None))  # the operator's: no client's quota
        try:
            self.cell.channel.place_ue(self.cell.users[user_id].handle, (placement.x_m, placement.y_m))
        except ValueError as error:
            if attached_here:
                self._detach(user_id)
            raise BadRequestError(f"{error}.", param="x_m", code="position_outside_layout") from None
        return self.ue_report(user_id)

    def ue_report(self, user_id: str) -> UeReport:
        user = self.cell.users.get(user_id)
        if user is None:
            raise NotFoundError(f"No user {user_id!r} is attached.", param="user_id", code="user_not_found")
        radio = self.cell.channel.ue_state(user.handle)
        traffic = self.cell.traffic(user_id)
        return UeReport(
            user_id=user_id,
            cell=radio.cell,
            x_m=radio.x_m,
            y_m=radio.y_m,
            distance_m=radio.distance_2d_m,
            los=radio.los,
            path_loss_db=radio.path_loss_db,
            shadowing_db=radio.shadowing_db,
            mean_sinr_db=radio.mean_sinr_db,
            average_throughput_bps=traffic.average_bps,
            served_throughput_bps=traffic.served_bps,
            delivered_bytes=traffic.delivered_bits / 8,
            queued_bytes=self.cell.queued_bits(user_id) / 8,
            active_streams=self._active_streams[user_id],
        )

    def ue_reports(self) -> list[UeReport]:
        return [self.ue_report(user_id) for user_id in self.cell.users]

    def cell_report(self) -> CellReport:
        throughputs = (self.cell.traffic(user_id).served_bps for user_id in self.cell.users)
        served = np.array([throughput for throughput in throughputs if throughput])
        return CellReport(
            channel_model=self.settings.channel_model.value,
            scheduler=self.settings.scheduler,
            time_s=self.clock.now() - self.air.start_time,
            slot=self.cell.slot,
            attached_ues=len(self.cell.users),
            backlogged_ues=self.cell.backlogged_users,
            sum_throughput_bps=self.cell.cell_throughput_bps,
            rb_utilisation=self.cell.rb_utilisation,
            jain_fairness=jain_index(served) if served.size else None,
            p5_user_throughput_bps=float(np.percentile(served, CELL_EDGE_PERCENTILE)) if served.size else None,
        )

    def _cell_gauges(self) -> dict[str, float]:
        report = self.cell_report()
        return {
            "attached_ues": report.attached_ues,
            "backlogged_ues": report.backlogged_ues,
            "sum_throughput_bps": report.sum_throughput_bps,
            "rb_utilisation": report.rb_utilisation,
            "jain_fairness": report.jain_fairness if report.jain_fairness is not None else float("nan"),
        }

    # --- answers -----------------------------------------------------------------------------

    async def forward(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], client_host: str | None, arrived: float
    ) -> Answer:
        """Forward a generation request; its answer is paced over the air to the user who sent it."""
        user = self.user_of(headers, body, client_host)
        user_id = user.user_id
        response = await self.gateway.request(method, path, body, {**headers, AIR_INTERFACE_HEADER: AIR_INTERFACE_NAME})
        passed = response_headers(response)
        if response.status != 200:
            content = await response.read()
            response.release()
            return Answer(response.status, passed, content)
        try:  # only a request the gateway took attaches a user: a refused key holds no radio slot
            self.ensure_attached(user)
        except ServiceError:
            response.close()
            raise
        route_header = response.headers.get(self.settings.offload_header, "")
        offloaded = route_header == self.settings.offload_value
        delay_s = self.settings.backhaul_delay_s if offloaded else 0.0
        answer = PacedAnswer(
            settings=self.settings,
            pacer=self.pacer,
            metrics=self.metrics,
            user_id=user_id,
            flow=self.pacer.new_flow(),
            route=_bounded(route_header, KNOWN_ROUTES),
            service_type=_bounded(response.headers.get(SERVICE_TYPE_HEADER), KNOWN_SERVICE_TYPES),
            delay_s=delay_s,
            timing=DeliveredTiming(arrived=arrived),
        )
        self._active_streams[user_id] += 1
        request_id = response.headers.get(REQUEST_ID_HEADER)
        answer.on_finish.append(lambda outcome: self._answer_done(user_id, answer.timing, request_id, outcome))
        passed[CHANNEL_USER_HEADER] = user_id
        passed[CHANNEL_BACKHAUL_MS_HEADER] = f"{delay_s * 1000:.1f}"
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return Answer(200, passed, answer.stream(response), media_type=content_type)
        return Answer(200, passed, answer.body(response), media_type=content_type or "application/json")

    async def passthrough(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """Anything but generation (``/v1/models``...) goes to the gateway and back without pacing."""
        response = await self.gateway.request(method, path, body or None, headers)
        content = await response.read()
        response.release()
        return Answer(response.status, response_headers(response), content)

    def _answer_done(self, user_id: str, timing: DeliveredTiming, request_id: str | None, outcome: str) -> None:
        self._active_streams[user_id] -= 1
        if user_id in self.cell.users:
            self.metrics.user_throughput.observe(self.cell.traffic(user_id).served_bps)
        transmission_s = timing.transmission_s
        if outcome == Outcome.SUCCESS and request_id and transmission_s is not None:
            report = AirReport(request_id=request_id[:MAX_REQUEST_ID_LENGTH], transmission_s=transmission_s)
            task = asyncio.create_task(self.gateway.report(report))
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)


def _bounded(value: str | None, known: frozenset[str]) -> str:
    return value if value in known else "other"


def jain_index(throughputs: np.ndarray) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one user has everything."""
    return float(throughputs.sum() ** 2 / (throughputs.size * np.square(throughputs).sum()))
