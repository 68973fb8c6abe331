"""The ``dqn`` baseline (section III-B, baseline 3): deep Q-learning on x (eq. 8), actions local/offload, reward eq. 10.

The learner is stable-baselines3's DQN (its MLP Q-network, replay buffer, Huber TD loss, Adam and gradient
clipping); the loop around it is ours, one loop for live and offline use:

- ``choose``: the Q-values of x (one-hot service type and token bin, ``offload_env.encode_state``); while
  training, our epsilon-greedy (``exploration``) picks a random action (source EXPLORE), else argmax Q
  (source BASELINE, ties stay local). Scores are the Q-values, in reward units.
- ``learn``: stores (x, action, reward) and every ``train_every`` transitions runs ``gradient_steps`` updates.
- ``pretrain(env, steps)``: the same choose/learn steps on an ``OffloadingEnv``, so experiments can pre-train.

Why not SB3's own ``learn``: live decisions arrive one at a time from the gateway, not from an env loop; one
loop serves both, with one exploration schedule counted in decisions. Each transition is an episode of length
one (the decision does not change which task comes next: a contextual bandit), so it is stored as terminal,
the TD target is the reward alone, gamma (set to 0) and the target network play no part, and Q(x, a) learns
the expected reward E[r | x, a]. Rewards are divided by ``reward_scale`` for training (Huber loss and Adam
work best near unit scale) and Q-values multiplied back for reporting.

SB3 draws from numpy's and torch's global generators (weight init, replay sampling); every call into it runs
inside a private generator state seeded from ``seed`` (``PrivateRuntime``), so a seed gives the same run
whatever else uses the global generators, and this policy does not disturb them. torch and SB3 are imported
when a DQN is built, so importing the registry stays light.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from edgecloud.core.reward import RewardParams
from edgecloud.core.vocabulary import Action, DecisionSource, TaskState
from edgecloud.decision.experience import Experience
from edgecloud.decision.exploration import EpsilonGreedy, make_schedule
from edgecloud.decision.policies.base import Decision, DecisionContext, Policy, register

if TYPE_CHECKING:
    from stable_baselines3 import DQN

    from edgecloud.decision.offload_env import OffloadingEnv


@dataclass(frozen=True)
class DQNParams:
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Q-network layers. Ours: SB3's default MLP; 12 inputs and 2 outputs need no more."""
    learning_rate: float = 1e-3
    """Adam step. Ours: 10x SB3's default, as one-step targets are stationary and training must be short."""
    batch_size: int = 32
    buffer_size: int = 10_000
    """Replay capacity, in transitions. Ours: a few thousand decisions cover the 35 states many times."""
    learning_starts: int = 64
    """Transitions stored before the first update."""
    train_every: int = 1
    """k: train after every k-th stored transition."""
    gradient_steps: int = 1
    """Updates per training round."""
    reward_scale: float = 30.0
    """Rewards are divided by this for training. Ours: the default T_target (``RewardParams``)."""
    exploration: str = "linear:1.0:0.05:1000"
    """Epsilon schedule over decisions (``exploration.make_schedule``). Ours: explore fully at first, as DQN
    baselines do, and settle at 5 % after 1,000 decisions (about 30 visits per state)."""

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "buffer_size": self.buffer_size,
            "train_every": self.train_every,
            "gradient_steps": self.gradient_steps,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.learning_starts < 0:
            raise ValueError(f"learning_starts must be >= 0, got {self.learning_starts}")
        if not self.hidden_sizes or any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive layer widths, got {self.hidden_sizes}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.reward_scale > 0:
            raise ValueError(f"reward_scale must be positive, got {self.reward_scale}")
        make_schedule(self.exploration)


class PrivateRuntime:
    """Private states for numpy's and torch's global generators, and one torch thread, while ``active``.

    One thread: a 12-64-64-2 network is far too small to gain from more, and on a busy machine torch's
    waiting worker threads made each update 30 times slower (measured: 3 ms instead of 0.1 ms per layer).
    """

    def __init__(self, seed: int):
        import numpy as np
        import torch

        outer_numpy, outer_torch = np.random.get_state(), torch.random.get_rng_state()
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self._numpy, self._torch = np.random.get_state(), torch.random.get_rng_state()
        np.random.set_state(outer_numpy)
        torch.random.set_rng_state(outer_torch)

    @contextmanager
    def active(self) -> Iterator[None]:
        import numpy as np
        import torch

        outer_numpy, outer_torch, outer_threads = (
            np.random.get_state(),
            torch.random.get_rng_state(),
            torch.get_num_threads(),
        )
        np.random.set_state(self._numpy)
        torch.random.set_rng_state(self._torch)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            self._numpy, self._torch = np.random.get_state(), torch.random.get_rng_state()
            np.random.set_state(outer_numpy)
            torch.random.set_rng_state(outer_torch)
            torch.set_num_threads(outer_threads)


def _build_dqn(params: DQNParams) -> DQN:
    from stable_baselines3 import DQN
    from stable_baselines3.common.logger import Logger

    from edgecloud.decision.offload_env import OffloadingEnv

    def no_outcome(state: TaskState, action: Action) -> tuple[float, bool]:
        raise RuntimeError("the DQN's own environment only declares the spaces; pretrain with an OffloadingEnv")

    model = DQN(
        "MlpPolicy",
        OffloadingEnv(no_outcome),
        learning_rate=params.learning_rate,
        buffer_size=params.buffer_size,
        batch_size=params.batch_size,
        gamma=0.0,
        policy_kwargs={"net_arch": list(params.hidden_sizes)},
        device="cpu",
    )
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _argmax(q: dict[Action, float]) -> Action:
    """The action of the highest Q-value; ties go to local (the first action)."""
    return max(q, key=lambda action: q[action])


@register
class DQNPolicy(Policy):
    name = "dqn"

    def __init__(self, params: DQNParams | None = None, *, seed: int = 0, training: bool = True):
        self.params = params or DQNParams()
        self.training = training
        """While True, ``choose`` explores and ``learn`` trains; False freezes the policy (greedy, no updates)."""
        self.exploration = EpsilonGreedy(make_schedule(self.params.exploration), random.Random(seed))
        self._runtime = PrivateRuntime(seed)
        with self._runtime.active():
            self._model = _build_dqn(self.params)
        if self._model.replay_buffer is None:
            raise RuntimeError("stable-baselines3's DQN was built without a replay buffer")
        self._buffer = self._model.replay_buffer
        self.transitions = 0
        """Transitions stored so far."""
        self.updates = 0
        """Training rounds run so far."""

    @classmethod
    def from_service(cls, *, rng: random.Random, reward_params: RewardParams) -> Self:
        return cls(DQNParams(reward_scale=reward_params.target_delay_s), seed=rng.getrandbits(32))

    def q_values(self, state: TaskState) -> dict[Action, float]:
        """Q(x, a) for both actions, in reward units."""
        import torch

        from edgecloud.decision.offload_env import ACTIONS, encode_state

        with self._runtime.active(), torch.no_grad():
            q = self._model.q_net(torch.as_tensor(encode_state(state)).unsqueeze(0))[0]
        return {action: float(q[action.alpha]) * self.params.reward_scale for action in ACTIONS}

    def greedy_action(self, state: TaskState) -> Action:
        return _argmax(self.q_values(state))

    def act(self, state: TaskState) -> Decision:
        """``choose`` without the coroutine."""
        q = self.q_values(state)
        scores = {action.value: value for action, value in q.items()}
        if self.training and self.exploration.explore():
            return Decision(self.exploration.random_action(), DecisionSource.EXPLORE, scores=scores)
        return Decision(_argmax(q), DecisionSource.BASELINE, scores=scores)

    def observe(self, state: TaskState, action: Action, reward: float) -> None:
        """``learn`` without the coroutine: store one transition, train every ``train_every``-th."""
        if not self.training:
            return
        import numpy as np

        from edgecloud.decision.offload_env import encode_state

        params = self.params
        obs = encode_state(state)[None]
        infos: list[dict[str, Any]] = [{}]
        self._buffer.add(
            obs, obs, np.array([action.alpha]), np.array([reward / params.reward_scale]), np.array([True]), infos
        )
        self.transitions += 1
        if self.transitions % params.train_every or self.transitions < max(params.learning_starts, params.batch_size):
            return
        with self._runtime.active():
            self._model.train(gradient_steps=params.gradient_steps, batch_size=params.batch_size)
        self.updates += 1

    async def choose(self, state: TaskState, context: DecisionContext) -> Decision:
        return self.act(state)

    async def learn(self, experience: Experience) -> None:
        self.observe(experience.state, experience.action, experience.reward)

    def pretrain(self, env: OffloadingEnv, steps: int) -> float:
        """Run ``steps`` one-task episodes of ``env`` through choose and learn; returns their mean reward."""
        if not self.training:
            raise RuntimeError("pretrain needs training=True: a frozen DQN neither explores nor learns")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        total = 0.0
        for _ in range(steps):
            _, info = env.reset()
            state: TaskState = info["state"]
            decision = self.act(state)
            _, value, *_ = env.step(decision.action.alpha)
            self.observe(state, decision.action, float(value))
            total += float(value)
        return total / steps
