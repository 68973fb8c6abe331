"""The estimated output length of a request: the decision's second keyword (paper eq. 8).

In order of preference:

1. the request's ``max_tokens`` (capped by ``max_tokens_cap`` when one is set): the client said how
   long the answer may be, and the bin of an upper bound is the best a gateway can know before the
   model runs;
2. the median of the last ``window`` output lengths observed for the service type, once at least
   ``min_observations`` were seen;
3. the prior for the service type, given by the caller.

Why the median of the last N: output lengths are right-skewed (a few answers run to the token
limit), and the median ignores such tails where a mean or an exponential moving average is pulled
up by them; a fixed window forgets at a known pace when a type's answers change (a new model, a new
workload). With N = 100 and a lognormal spread of sigma 0.5, the median's standard error is about
1.25 * 0.5 / 10 = 6% of the median, well inside one token bin (each spans a factor of 2 or more).

Where: a Redis list per service type (``{key_prefix}:{service_type}``), newest first, written with
LPUSH + LTRIM in one script, so every gateway replica estimates from the same observations.
Redis is never allowed to fail a request or hold it up: each call has a short socket timeout, a
failure switches to an in-process copy of the same statistic (this replica's own observations plus
the last window read from Redis), Redis is left alone for ``retry_interval_s`` and then tried again,
and observations made meanwhile are pushed once it answers. One warning per outage, not per request.

Observations go to Redis in batches: a background task pushes what was observed in one pipeline, after
gathering for ``batch_wait_s`` from the first (at once when ``batch_size`` wait); ``observe`` returns
once its batch went, or failed and waits for the next.
Every observation is pushed exactly once: it carries an id that Redis remembers
(``{key_prefix}:pushed:{id}``, for ``PUSH_MARKER_TTL_S``), so a push whose reply was lost (it timed out
after Redis applied it: a loaded or just-restarted Redis answers slowly) and is sent again is skipped,
rather than counted twice in every replica's median.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from edgecloud.core.redis_guard import CALL_TIMEOUT_S, RETRY_INTERVAL_S, RedisGuard, redis_client
from edgecloud.core.vocabulary import ServiceType, token_bin

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "edgecloud:lengths"
# Observations per service type the median is taken over (see the module docstring).
DEFAULT_WINDOW = 100
# Below this many observations the prior is used: a median of fewer than 3 rejects no outlier.
MIN_OBSERVATIONS = 3
# Most observations in one pipeline, and how long the first waits for others (see GatewaySettings.lengths_batch_*).
BATCH_SIZE = 100
BATCH_WAIT_S = 0.005
# How long Redis remembers a pushed observation's id: far above a retry (milliseconds) or the usual outage; an
# observation applied just before an outage longer than this, whose reply was lost, may count twice.
PUSH_MARKER_TTL_S = 600
# KEYS: the observation's marker, the service type's list. ARGV: the marker's TTL, the window, the length.
# Pushes (the newest ends at the head) and trims only if the marker was not set before.
PUSH_ONCE_SCRIPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('LPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
  return 1
end
return 0
"""


class EstimateSource(StrEnum):
    MAX_TOKENS = "max_tokens"
    OBSERVED = "observed"
    PRIOR = "prior"


@dataclass(frozen=True)
class LengthEstimate:
    tokens: int
    source: EstimateSource
    samples: int = 0  # observations behind an ``observed`` estimate


def median_tokens(values: Iterable[int]) -> int:
    """The median of token counts, rounded to a whole token (at least 1)."""
    return max(1, round(statistics.median(values)))


@dataclass(frozen=True)
class EstimationError:
    """How far estimates were from the lengths then observed."""

    count: int
    mean_absolute_tokens: float  # mean |estimate - observed|
    mean_relative: float  # mean |estimate - observed| / observed
    bin_accuracy: float  # share of requests whose estimate fell in the observed length's token bin


def estimation_error(estimated: int | Sequence[int], observed: Sequence[int]) -> EstimationError:
    """The error of one estimate (an int, compared with every observation) or of one estimate per observation."""
    estimates = [estimated] * len(observed) if isinstance(estimated, int) else list(estimated)
    if len(estimates) != len(observed):
        raise ValueError(f"{len(estimates)} estimates for {len(observed)} observations")
    if not observed:
        raise ValueError("no observations to compare with")
    if min(observed) < 1 or min(estimates) < 1:
        raise ValueError("token counts must be at least 1")
    pairs = list(zip(estimates, observed, strict=True))
    return EstimationError(
        count=len(pairs),
        mean_absolute_tokens=statistics.fmean(abs(guess - actual) for guess, actual in pairs),
        mean_relative=statistics.fmean(abs(guess - actual) / actual for guess, actual in pairs),
        bin_accuracy=statistics.fmean(token_bin(guess) == token_bin(actual) for guess, actual in pairs),
    )


class OutputLengthEstimator:
    """Estimates output lengths per service type from observations shared in Redis (or kept here)."""

    def __init__(
        self,
        redis_url: str | None,
        priors: Mapping[ServiceType, int],
        key_prefix: str = DEFAULT_KEY_PREFIX,
        window: int = DEFAULT_WINDOW,
        *,
        min_observations: int = MIN_OBSERVATIONS,
        max_tokens_cap: int | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
        retry_interval_s: float = RETRY_INTERVAL_S,
        batch_size: int = BATCH_SIZE,
        batch_wait_s: float = BATCH_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        missing = [service_type.value for service_type in ServiceType if service_type not in priors]
        if missing:
            raise ValueError(f"priors lack service types {missing}")
        low = {service_type.value: tokens for service_type, tokens in priors.items() if tokens < 1}
        if low:
            raise ValueError(f"priors must be at least 1 token, got {low}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 1 <= min_observations <= window:
            raise ValueError(f"min_observations must be in [1, window={window}], got {min_observations}")
        if max_tokens_cap is not None and max_tokens_cap < 1:
            raise ValueError(f"max_tokens_cap must be at least 1, got {max_tokens_cap}")
        if batch_size < 1 or batch_wait_s < 0:
            raise ValueError(
                f"batch_size must be at least 1 and batch_wait_s not negative, got {batch_size}, {batch_wait_s}"
            )
        self.redis_url = redis_url
        self.priors = dict(priors)
        self.key_prefix = key_prefix
        self.window = window
        self.min_observations = min_observations
        self.max_tokens_cap = max_tokens_cap
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self._redis = RedisGuard(
            "output-length store",
            "estimating from this replica's observations",
            timeout_s,
            retry_interval_s,
            before=self._flush_backlog,
            log=logger,
            clock=clock,
        )
        self._client: aioredis.Redis | None = None
        self._local: dict[ServiceType, deque[int]] = {t: deque(maxlen=window) for t in ServiceType}
        # Observations Redis has not confirmed, oldest first, with their ids; the newest window per type.
        self._pending: deque[_Observation] = deque(maxlen=window * len(ServiceType))
        self._push_once: AsyncScript | None = None  # PUSH_ONCE_SCRIPT, registered on the client
        self._backlog = False  # a push failed: what waits goes ahead of the next call to Redis
        self._wake = asyncio.Event()
        self._next_batch: asyncio.Future[None] | None = None  # done when the batch being gathered was pushed
        self._flusher: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Redis if configured; an unreachable Redis is logged, not raised."""
        if self.redis_url is None or self._client is not None:
            return
        self._client = redis_client(self.redis_url, self._redis.timeout_s)
        client = self._client
        self._push_once = client.register_script(PUSH_ONCE_SCRIPT)
        self._flusher = asyncio.create_task(self._flush_forever())
        await self._redis.call(lambda: client.ping())

    async def close(self) -> None:
        """Stop the background pushes, after one last try for what waits."""
        if self._flusher is not None:
            flusher, self._flusher = self._flusher, None
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._redis.call(self._flush)
            self._batch_done()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @property
    def redis_available(self) -> bool:
        """True when Redis is configured, started and answered the last call."""
        return self._client is not None and self._redis.available

    def key(self, service_type: ServiceType) -> str:
        return f"{self.key_prefix}:{service_type.value}"

    # --- estimate and observe ----------------------------------------------------------------

    async def estimate(self, service_type: ServiceType, max_tokens: int | None) -> LengthEstimate:
        """The estimated output tokens of a request; a non-positive ``max_tokens`` counts as absent."""
        if max_tokens is not None and max_tokens >= 1:
            capped = max_tokens if self.max_tokens_cap is None else min(max_tokens, self.max_tokens_cap)
            return LengthEstimate(capped, EstimateSource.MAX_TOKENS)
        observed = await self._window(service_type)
        if len(observed) >= self.min_observations:
            return LengthEstimate(median_tokens(observed), EstimateSource.OBSERVED, len(observed))
        return LengthEstimate(self.priors[service_type], EstimateSource.PRIOR)

    async def observe(self, service_type: ServiceType, output_tokens: int) -> None:
        """Record a finished request's output length; counts below 1 carry no length and are ignored."""
        if output_tokens < 1:
            return
        self._local[service_type].append(output_tokens)
        if self._client is None:
            return
        self._pending.append(_Observation(uuid.uuid4().hex, service_type, output_tokens))
        if self._flusher is None:
            return
        if self._next_batch is None:
            self._next_batch = asyncio.get_running_loop().create_future()
        batch = self._next_batch
        self._wake.set()
        await asyncio.shield(batch)  # pushed with the others of its batch, or waiting after a failure

    async def _flush_forever(self) -> None:
        """Push what was observed, in batches: one pipeline per batch, one batch at a time."""
        while True:
            await self._wake.wait()
            if len(self._pending) < self.batch_size and self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)
            self._wake.clear()
            batch, self._next_batch = self._next_batch, None  # what is observed from now on goes in the next
            try:
                await self._redis.call(self._flush)
            finally:
                _done(batch)

    def _batch_done(self) -> None:
        batch, self._next_batch = self._next_batch, None
        _done(batch)

    async def _window(self, service_type: ServiceType) -> list[int]:
        """The last ``window`` observations of a type, from Redis if it answers, else from here."""
        client = self._client
        if client is not None:
            key = self.key(service_type)
            raw = await self._redis.call(lambda: client.lrange(key, 0, self.window - 1))
            if raw is not None:
                values = _tokens(raw)
                self._local[service_type] = deque(reversed(values), maxlen=self.window)
                return values
        return list(self._local[service_type])

    async def _flush_backlog(self) -> None:
        """Before any call to Redis after a failed push: what waited goes first (a fresh batch does not: its
        background push is on its way, and a request's estimate must not wait for it)."""
        if self._backlog:
            await self._flush()

    async def _flush(self) -> None:
        """Push the observations Redis has not confirmed, oldest first, in one pipeline; on failure they wait.

        Each goes with its id, so one whose earlier push Redis applied (its reply lost) is skipped.
        """
        client, push_once = self._client, self._push_once
        waiting = list(self._pending)
        if client is None or push_once is None or not waiting:
            return
        try:
            async with client.pipeline(transaction=False) as pipe:
                for observation in waiting:
                    keys = [f"{self.key_prefix}:pushed:{observation.id}", self.key(observation.service_type)]
                    await push_once(keys=keys, args=[PUSH_MARKER_TTL_S, self.window, observation.tokens], client=pipe)
                await pipe.execute()
        except BaseException:
            self._backlog = True
            raise
        backlog = self._backlog
        confirmed = {observation.id for observation in waiting}  # what was observed meanwhile stays
        self._pending = deque((o for o in self._pending if o.id not in confirmed), maxlen=self._pending.maxlen)
        self._backlog = False
        if backlog:
            logger.info("pushed %d output lengths that waited for Redis", len(waiting))


def _done(batch: asyncio.Future[None] | None) -> None:
    if batch is not None and not batch.done():
        batch.set_result(None)


@dataclass(frozen=True)
class _Observation:
    id: str
    service_type: ServiceType
    tokens: int


def _tokens(raw: Sequence[bytes | str]) -> list[int]:
    """Token counts from a Redis list; entries that are not positive integers (foreign writes) are skipped."""
    values = []
    for item in raw:
        try:
            value = int(item)
        except ValueError:
            continue
        if value >= 1:
            values.append(value)
    return values
