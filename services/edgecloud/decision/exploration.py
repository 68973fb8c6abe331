"""Epsilon-greedy exploration (section III-B): with probability epsilon a random action, else the policy's.

A schedule says what epsilon is at step t (``epsilon(step)``); ``EpsilonGreedy`` draws from a seeded
``random.Random`` and counts the steps. Schedules are chosen by a config string (``make_schedule``):

- ``constant:E``: epsilon = E at every step (the paper's setting; ``constant:0`` is baseline 2's "no exploration");
- ``linear:START:END:STEPS``: from START at step 0 straight down to END at step STEPS, then END;
- ``exp:START:END:STEPS``: from START at step 0 down to END at step STEPS by a constant factor per step
  (geometric interpolation, START * (END/START)^(t/STEPS)), then END. It spends longer at small epsilon
  than ``linear`` with the same ends; both ends must be above 0 (a geometric path never reaches 0).

Both decaying kinds share the three numbers so that a spec reads the same whichever shape it names.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from edgecloud.core.vocabulary import Action

DecayKind = Literal["linear", "exp"]


def _check_probability(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


class EpsilonSchedule(ABC):
    """Epsilon as a function of the step count (0 for the first decision)."""

    def epsilon(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self._at(step)

    @abstractmethod
    def _at(self, step: int) -> float: ...

    @property
    @abstractmethod
    def spec(self) -> str:
        """The config string that ``make_schedule`` turns back into this schedule."""


@dataclass(frozen=True)
class ConstantEpsilon(EpsilonSchedule):
    value: float

    def __post_init__(self) -> None:
        _check_probability("epsilon", self.value)

    def _at(self, step: int) -> float:
        return self.value

    @property
    def spec(self) -> str:
        return f"constant:{self.value!r}"


@dataclass(frozen=True)
class DecayingEpsilon(EpsilonSchedule):
    start: float
    end: float
    decay_steps: int
    kind: DecayKind = "linear"

    def __post_init__(self) -> None:
        _check_probability("start", self.start)
        _check_probability("end", self.end)
        if self.end > self.start:
            raise ValueError(f"a decaying epsilon needs end <= start, got start={self.start}, end={self.end}")
        if isinstance(self.decay_steps, bool) or not isinstance(self.decay_steps, int) or self.decay_steps < 1:
            raise ValueError(f"decay_steps must be a positive integer, got {self.decay_steps!r}")
        if self.kind not in ("linear", "exp"):
            raise ValueError(f"kind must be 'linear' or 'exp', got {self.kind!r}")
        if self.kind == "exp" and self.end <= 0.0:
            raise ValueError("an 'exp' schedule needs start and end above 0 (use 'linear' to decay to 0)")

    def _at(self, step: int) -> float:
        fraction = min(step / self.decay_steps, 1.0)
        if fraction >= 1.0:
            return self.end
        if self.kind == "linear":
            return self.start + (self.end - self.start) * fraction
        return float(self.start * (self.end / self.start) ** fraction)

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.start!r}:{self.end!r}:{self.decay_steps}"


class EpsilonGreedy:
    """Decides whether to explore; every call to ``explore`` is one step of the schedule.

    ``explore`` always draws one number, whatever epsilon is, so the stream of draws (and thus a seeded run)
    does not depend on the schedule's values.
    """

    ACTIONS: tuple[Action, ...] = tuple(Action)

    def __init__(self, schedule: EpsilonSchedule, rng: random.Random):
        self.schedule = schedule
        self._rng = rng
        self._step = 0

    @property
    def step(self) -> int:
        """How many times ``explore`` has been called."""
        return self._step

    @property
    def current_epsilon(self) -> float:
        """The epsilon the next ``explore`` will use."""
        return self.schedule.epsilon(self._step)

    def explore(self, draw: float | None = None) -> bool:
        """One step: True with probability epsilon; ``draw`` is a uniform number drawn elsewhere for this step
        (a gateway's, for a decision it remembers), used instead of one of this generator's."""
        epsilon = self.schedule.epsilon(self._step)
        self._step += 1
        return (self._rng.random() if draw is None else draw) < epsilon

    def advance(self, steps: int) -> None:
        """Count ``steps`` whose draw was made elsewhere (a gateway drew them for decisions it answered from its
        memory): the schedule moves on, this generator draws nothing."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self._step += steps

    def random_action(self) -> Action:
        """Local or offload, each with probability 1/2."""
        return self._rng.choice(self.ACTIONS)


_SPEC_FORMS = "'constant:0.1', 'linear:1.0:0.05:500' or 'exp:1.0:0.05:500'"


def make_schedule(spec: str) -> EpsilonSchedule:
    """The schedule a config string names: ``constant:E``, ``linear:START:END:STEPS`` or ``exp:START:END:STEPS``."""
    try:
        return _parse(spec)
    except ValueError as error:
        raise ValueError(f"epsilon schedule {spec!r}: {error}") from None


def _parse(spec: str) -> EpsilonSchedule:
    kind, *values = (part.strip() for part in spec.strip().split(":"))
    if kind == "constant":
        if len(values) != 1:
            raise ValueError("'constant' takes one value, e.g. 'constant:0.1'")
        return ConstantEpsilon(_number(values[0]))
    if kind in ("linear", "exp"):
        if len(values) != 3:
            raise ValueError(f"{kind!r} takes three values START:END:STEPS, e.g. '{kind}:1.0:0.05:500'")
        decay_kind: DecayKind = "linear" if kind == "linear" else "exp"
        return DecayingEpsilon(_number(values[0]), _number(values[1]), _steps(values[2]), decay_kind)
    raise ValueError(f"unknown kind {kind!r}; use {_SPEC_FORMS}")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _steps(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"decay steps {text!r} is not a whole number") from None
