"""The offloading decision as a gymnasium environment, for pre-training the DQN baseline (section III-B, baseline 3).

One episode is one task: ``reset`` samples x (eq. 8) from a given distribution over the keyword grid,
``step(action)`` asks a user-supplied outcome function what serving x that way gives (t_total, quality
met) and returns the eq.-10 reward; the episode then ends. A decision does not change which task comes
next, so the problem is a contextual bandit and one-step episodes lose nothing.

The observation is x one-hot encoded: the service type (7 values) followed by the token bin (5 values).
Actions are alpha of eq. 1: 0 = local, 1 = offload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from edgecloud.core.reward import RewardParams
from edgecloud.core.vocabulary import TOKEN_BINS, Action, ServiceType, TaskState, keyword_grid
from edgecloud.decision.policies.base import DecisionContext
from edgecloud.decision.policies.oracle import outcome_reward

# What serving a task of kind x by an action gives: (t_total in seconds, quality met). It may be random;
# it then draws from a generator it was given (the environment's own generator only samples tasks).
TaskOutcome = Callable[[TaskState, Action], tuple[float, bool]]

SERVICE_TYPES: tuple[ServiceType, ...] = tuple(ServiceType)
OBSERVATION_SIZE = len(SERVICE_TYPES) + len(TOKEN_BINS)
ACTIONS: tuple[Action, ...] = (Action.LOCAL, Action.OFFLOAD)
"""Indexed by alpha (eq. 1)."""


def encode_state(state: TaskState) -> np.ndarray:
    """x as a float32 vector: one-hot service type, then one-hot token bin."""
    vector = np.zeros(OBSERVATION_SIZE, dtype=np.float32)
    vector[SERVICE_TYPES.index(state.service_type)] = 1.0
    vector[len(SERVICE_TYPES) + TOKEN_BINS.index(state.token_bin)] = 1.0
    return vector


def observation_space() -> spaces.Box:
    return spaces.Box(low=0.0, high=1.0, shape=(OBSERVATION_SIZE,), dtype=np.float32)


def action_space() -> spaces.Discrete:
    return spaces.Discrete(len(ACTIONS))


class OffloadingEnv(gymnasium.Env[np.ndarray, np.int64]):
    """Tasks drawn from ``distribution`` (weights by x; default: uniform over the 35 keyword states)."""

    def __init__(
        self,
        outcome: TaskOutcome,
        reward_params: RewardParams | None = None,
        distribution: Mapping[TaskState, float] | None = None,
        seed: int | None = None,
    ):
        self.outcome = outcome
        self.reward_params = reward_params or RewardParams()
        weights = distribution if distribution is not None else dict.fromkeys(keyword_grid(), 1.0)
        self.states: tuple[TaskState, ...] = tuple(weights)
        probabilities = np.array([weights[state] for state in self.states], dtype=np.float64)
        if not self.states or not np.all(np.isfinite(probabilities)) or np.any(probabilities < 0):
            raise ValueError("distribution must give every task state a finite weight >= 0")
        if probabilities.sum() <= 0:
            raise ValueError("distribution must give some task state a weight above 0")
        self.probabilities = probabilities / probabilities.sum()
        self.observation_space = observation_space()
        self.action_space = action_space()
        self.state: TaskState | None = None
        if seed is not None:
            super().reset(seed=seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = self.states[int(self.np_random.choice(len(self.states), p=self.probabilities))]
        return encode_state(self.state), {"state": self.state}

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.state is None:
            raise RuntimeError("call reset() first: every episode is one task")
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"action must be 0 (local) or 1 (offload), got {action!r}")
        state, chosen = self.state, ACTIONS[int(action)]
        t_total_s, quality_met = self.outcome(state, chosen)
        value = outcome_reward(self.reward_params, t_total_s, quality_met)
        self.state = None
        info = {"state": state, "action": chosen, "t_total_s": t_total_s, "quality_met": quality_met}
        return encode_state(state), value, True, False, info

    def context(self) -> DecisionContext:
        """The current task's true outcomes, for the oracle (call between ``reset`` and ``step``)."""
        state = self.state
        if state is None:
            raise RuntimeError("call reset() first: the context belongs to the current task")
        return DecisionContext(outcome_of=lambda action: self.outcome(state, action))
