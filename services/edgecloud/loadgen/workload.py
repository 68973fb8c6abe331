"""What each request of a run is: user, service type, prompt, max_tokens and send time; pure and seeded.

Request i draws its contents from its own generator, seeded with (seed, i): the same seed gives the
same requests whatever the rate, the bound or the number of requests, so the points of a sweep send
the same prompts. Send times come from a separate generator seeded with the seed alone
(``arrivals.py``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from edgecloud.core.vocabulary import ServiceType
from edgecloud.loadgen.arrivals import send_times
from edgecloud.loadgen.corpus import Corpus
from edgecloud.loadgen.settings import LoadgenSettings


@dataclass(frozen=True)
class PlannedRequest:
    index: int
    user: str
    service_type: ServiceType
    prompt_id: str
    prompt: str
    max_tokens: int
    scheduled_s: float | None  # send time from the start of the run; None in a closed loop (sent when a slot frees)


@dataclass(frozen=True)
class Workload:
    corpus: Corpus
    seed: int
    num_users: int
    quality_share: float
    quality_types: tuple[ServiceType, ...]
    regular_types: tuple[ServiceType, ...]
    max_tokens: int | None  # fixed output length; None: drawn around output_tokens_mean
    output_tokens_mean: int
    arrival_burstiness: float
    ramp_up_s: float

    @classmethod
    def from_settings(cls, settings: LoadgenSettings, corpus: Corpus) -> Workload:
        quality, regular = settings.type_groups
        return cls(
            corpus=corpus,
            seed=settings.seed,
            num_users=settings.num_users,
            quality_share=settings.effective_quality_share,
            quality_types=tuple(quality),
            regular_types=tuple(regular),
            max_tokens=settings.max_tokens,
            output_tokens_mean=settings.output_tokens_mean,
            arrival_burstiness=settings.burstiness,
            ramp_up_s=settings.ramp_up_s,
        )

    def user_name(self, number: int) -> str:
        return f"loadgen-user-{number:0{len(str(self.num_users - 1))}d}"

    def request(self, index: int, scheduled_s: float | None = None) -> PlannedRequest:
        """Request ``index``: user uniform, type by the quality share, prompt uniform in its type, max_tokens."""
        rng = random.Random(f"{self.seed}/request/{index}")
        user = self.user_name(rng.randrange(self.num_users))
        quality = rng.random() < self.quality_share
        service_type = rng.choice(self.quality_types if quality else self.regular_types)
        prompt = rng.choice(self.corpus[service_type])
        # Uniform on 1..2m-1: mean exactly m, bounded by 2m-1 so the longest request is known up front.
        max_tokens = self.max_tokens or rng.randint(1, 2 * self.output_tokens_mean - 1)
        return PlannedRequest(index, user, service_type, prompt.id, prompt.text, max_tokens, scheduled_s)

    def open_loop(self, rate: float, limit: int | None, duration_s: float | None) -> Iterator[PlannedRequest]:
        """Requests with their send times at ``rate``, until ``limit`` requests or ``duration_s``."""
        times = send_times(rate, self.arrival_burstiness, self.ramp_up_s, random.Random(f"{self.seed}/arrivals"))
        for index, at in zip(itertools.count(), times, strict=False):
            if (limit is not None and index >= limit) or (duration_s is not None and at >= duration_s):
                return
            yield self.request(index, at)

    def closed_loop(self, limit: int | None) -> Iterator[PlannedRequest]:
        """Requests without send times, ``limit`` of them or endless (the run's deadline stops it)."""
        indices = range(limit) if limit is not None else itertools.count()
        for index in indices:
            yield self.request(index)
