"""Failure injection: rejected requests (429, 503) and streams cut mid-way, at seeded rates."""

from __future__ import annotations

import random
from dataclasses import dataclass

from edgecloud.core.errors import RateLimitError, UpstreamUnavailableError


class StreamAborted(Exception):
    """Raised inside a response stream to drop the connection without finishing it.

    Not a ``ServiceError``: no body can be sent any more. The app closes the connection, so the
    client sees a truncated stream with no ``[DONE]``.
    """


@dataclass(frozen=True)
class FailureRates:
    """Probability of each injected failure per request, each in [0, 1]."""

    rate_limited: float = 0.0  # 429
    unavailable: float = 0.0  # 503
    disconnect: float = 0.0  # streaming requests only: the stream stops after some tokens

    def __post_init__(self) -> None:
        for name, rate in vars(self).items():
            if not 0 <= rate <= 1:
                raise ValueError(f"failure rate {name} must be in [0, 1], got {rate}")
        if self.rate_limited + self.unavailable > 1:
            raise ValueError("the 429 and 503 rates must add up to at most 1")


class FailureInjector:
    def __init__(self, rates: FailureRates, rng: random.Random):
        self.rates = rates
        self._rng = rng

    def check_admission(self) -> None:
        """Raise the injected 429 or 503 for this request, if it draws one."""
        if not (self.rates.rate_limited or self.rates.unavailable):
            return
        draw = self._rng.random()
        if draw < self.rates.rate_limited:
            raise RateLimitError("Rate limit reached (injected by the simulator).", code="rate_limit_exceeded")
        if draw < self.rates.rate_limited + self.rates.unavailable:
            raise UpstreamUnavailableError("The model is overloaded (injected by the simulator).", code="overloaded")

    def disconnect_after(self, output_tokens: int) -> int | None:
        """How many tokens a stream sends before it is cut, or ``None`` to let it finish.

        At least one token goes out when there are two or more, and at least one is always missing.
        """
        if not self.rates.disconnect or self._rng.random() >= self.rates.disconnect:
            return None
        return self._rng.randint(min(1, output_tokens - 1), output_tokens - 1)
