"""Exploration schedules and the baseline policies: always/random, oracle, DQN (section III-B), its environment."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from edgecloud.core.reward import RewardParams
from edgecloud.core.vocabulary import TOKEN_BINS, Action, DecisionSource, ServiceType, TaskState, keyword_grid
from edgecloud.decision.experience import Experience
from edgecloud.decision.exploration import (
    ConstantEpsilon,
    DecayingEpsilon,
    EpsilonGreedy,
    make_schedule,
)
from edgecloud.decision.offload_env import OBSERVATION_SIZE, OffloadingEnv, encode_state
from edgecloud.decision.policies import always, dqn, oracle, random_policy
from edgecloud.decision.policies.base import POLICY_REGISTRY, DecisionContext
from edgecloud.decision.policies.dqn import DQNParams, DQNPolicy
from edgecloud.decision.policies.oracle import MissingOutcomeError, OraclePolicy, outcome_reward

DRAWS = 10_000
CHAT = TaskState.of(ServiceType.CHAT, 300)
CODING = TaskState.of(ServiceType.CODING, 300)


def within_sigmas(count: int, expected: float, variance: float, sigmas: float = 4.0) -> bool:
    return abs(count - expected) <= sigmas * math.sqrt(variance)


# --- epsilon schedules --------------------------------------------------------------------------------


def test_schedule_values_at_given_steps():
    assert [ConstantEpsilon(0.1).epsilon(step) for step in (0, 1, 10**6)] == [0.1, 0.1, 0.1]
    linear = DecayingEpsilon(1.0, 0.1, 100)
    assert [linear.epsilon(step) for step in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    geometric = DecayingEpsilon(1.0, 0.01, 100, kind="exp")
    assert [geometric.epsilon(step) for step in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.1, 0.01, 0.01])
    assert geometric.epsilon(25) < linear.epsilon(25)
    with pytest.raises(ValueError, match="step must be >= 0"):
        linear.epsilon(-1)


@pytest.mark.parametrize(
    ("spec", "schedule"),
    [
        ("constant:0.1", ConstantEpsilon(0.1)),
        ("linear:1.0:0.05:500", DecayingEpsilon(1.0, 0.05, 500)),
        (" exp : 1 : 0.01 : 200 ", DecayingEpsilon(1.0, 0.01, 200, kind="exp")),
        ("constant:0", ConstantEpsilon(0.0)),
    ],
)
def test_make_schedule_parses_and_round_trips(spec, schedule):
    assert make_schedule(spec) == schedule
    assert make_schedule(schedule.spec) == schedule


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0.1", "unknown kind '0.1'"),
        ("greedy:0.1", "unknown kind 'greedy'"),
        ("constant", "'constant' takes one value"),
        ("linear:1.0:0.1", "'linear' takes three values START:END:STEPS"),
        ("constant:abc", "'abc' is not a number"),
        ("linear:1:0.1:2.5", "decay steps '2.5' is not a whole number"),
        ("constant:1.5", r"epsilon must be a probability in \[0, 1\]"),
        ("linear:0.1:0.5:10", "needs end <= start"),
        ("linear:1:0.1:0", "decay_steps must be a positive integer"),
        ("exp:1:0:100", "'exp' schedule needs start and end above 0"),
    ],
)
def test_make_schedule_rejects_bad_specs_clearly(spec, message):
    with pytest.raises(ValueError, match=message) as raised:
        make_schedule(spec)
    assert repr(spec) in str(raised.value)


@pytest.mark.parametrize("epsilon", [0.05, 0.1, 0.5])
def test_exploration_rate_matches_epsilon(epsilon):
    greedy = EpsilonGreedy(ConstantEpsilon(epsilon), random.Random(7))
    explored = sum(greedy.explore() for _ in range(DRAWS))
    assert greedy.step == DRAWS
    assert within_sigmas(explored, DRAWS * epsilon, DRAWS * epsilon * (1 - epsilon))


def test_random_action_is_fair_and_seeded():
    greedy = EpsilonGreedy(ConstantEpsilon(1.0), random.Random(3))
    actions = [greedy.random_action() for _ in range(DRAWS)]
    assert within_sigmas(actions.count(Action.OFFLOAD), DRAWS / 2, DRAWS / 4)
    again = EpsilonGreedy(ConstantEpsilon(1.0), random.Random(3))
    assert [again.random_action() for _ in range(DRAWS)] == actions


def test_same_seed_same_sequence():
    def run(seed: int) -> list[bool]:
        greedy = EpsilonGreedy(make_schedule("linear:1.0:0.05:500"), random.Random(seed))
        return [greedy.explore() for _ in range(1000)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_never_and_always():
    assert not any(EpsilonGreedy(ConstantEpsilon(0.0), random.Random(0)).explore() for _ in range(1000))
    assert all(EpsilonGreedy(ConstantEpsilon(1.0), random.Random(0)).explore() for _ in range(1000))


def test_decaying_schedule_explores_less_later():
    schedule = DecayingEpsilon(1.0, 0.05, 5000)
    greedy = EpsilonGreedy(schedule, random.Random(5))
    draws = [greedy.explore() for _ in range(DRAWS)]
    assert sum(draws[:1000]) > 800 > 100 > sum(draws[-1000:])
    epsilons = [schedule.epsilon(step) for step in range(DRAWS)]
    expected, variance = sum(epsilons), sum(e * (1 - e) for e in epsilons)
    assert within_sigmas(sum(draws), expected, variance)
    assert greedy.current_epsilon == pytest.approx(0.05)


# --- registry and simple baselines ----------------------------------------------------------------


def test_registry_holds_every_baseline():
    expected = {
        "always_edge": always.AlwaysEdgePolicy,
        "always_cloud": always.AlwaysCloudPolicy,
        "random": random_policy.RandomPolicy,
        "oracle": oracle.OraclePolicy,
        "dqn": dqn.DQNPolicy,
    }
    for name, policy_class in expected.items():
        assert POLICY_REGISTRY[name] is policy_class
        built = policy_class.from_service(rng=random.Random(0), reward_params=RewardParams())
        assert isinstance(built, policy_class)
        assert built.name == name


@pytest.mark.parametrize(
    ("policy", "action"), [(always.AlwaysEdgePolicy(), Action.LOCAL), (always.AlwaysCloudPolicy(), Action.OFFLOAD)]
)
async def test_always_policies(policy, action):
    for state in keyword_grid():
        decision = await policy.choose(state, DecisionContext())
        assert (decision.action, decision.source) == (action, DecisionSource.BASELINE)


async def test_random_policy_is_fair_and_seeded():
    async def run(seed: int) -> list[Action]:
        policy = random_policy.RandomPolicy(random.Random(seed))
        decisions = [await policy.choose(CHAT, DecisionContext()) for _ in range(DRAWS)]
        assert {decision.source for decision in decisions} == {DecisionSource.BASELINE}
        return [decision.action for decision in decisions]

    actions = await run(1)
    assert within_sigmas(actions.count(Action.OFFLOAD), DRAWS / 2, DRAWS / 4)
    assert await run(1) == actions
    with pytest.raises(ValueError, match="p_offload"):
        random_policy.RandomPolicy(random.Random(0), p_offload=1.5)


# --- oracle -------------------------------------------------------------------------------------------


def outcomes(local: tuple[float, bool], offload: tuple[float, bool]) -> DecisionContext:
    table = {Action.LOCAL: local, Action.OFFLOAD: offload}
    return DecisionContext(outcome_of=lambda action: table[action])


@pytest.mark.parametrize(
    ("local", "offload", "best"),
    [
        ((13.6, True), (32.2, True), Action.LOCAL),  # both meet quality: the faster
        ((13.6, False), (32.2, True), Action.OFFLOAD),  # the faster misses quality
        ((40.0, True), (32.2, True), Action.OFFLOAD),  # the cloud is faster
        ((13.6, False), (32.2, False), Action.LOCAL),  # neither feasible: the higher reward
        ((20.0, True), (20.0, True), Action.LOCAL),  # a tie stays local
    ],
)
async def test_oracle_picks_best_feasible(local, offload, best):
    params = RewardParams(target_delay_s=30.0, quality_penalty=60.0)
    decision = await OraclePolicy(params).choose(CODING, outcomes(local, offload))
    assert (decision.action, decision.source) == (best, DecisionSource.BASELINE)
    assert decision.scores == pytest.approx(
        {"local": outcome_reward(params, *local), "offload": outcome_reward(params, *offload)}
    )
    assert decision.scores["local"] == pytest.approx(30.0 - local[0] - (0.0 if local[1] else 60.0))


async def test_oracle_puts_feasibility_before_reward():
    # A penalty smaller than the delay gap makes the infeasible edge score higher; quality still comes first.
    params = RewardParams(target_delay_s=30.0, quality_penalty=5.0)
    decision = await OraclePolicy(params).choose(CODING, outcomes((13.6, False), (32.2, True)))
    assert decision.scores["local"] > decision.scores["offload"]
    assert decision.action is Action.OFFLOAD


async def test_oracle_needs_outcomes():
    with pytest.raises(MissingOutcomeError, match="outcome_of"):
        await OraclePolicy().choose(CHAT, DecisionContext())


# --- the environment ----------------------------------------------------------------------------------

TOKENS = dict(zip(TOKEN_BINS, (64, 320, 768, 1536, 3000), strict=True))


def paper_outcome(state: TaskState, action: Action) -> tuple[float, bool]:
    """Section IV-A's TTFT/TPOT (edge 0.23 s, 1/75 s; cloud 0.42 s, 1/32 s): the edge is always faster, and
    misses quality-preferred tasks' quality."""
    tokens = TOKENS[state.token_bin]
    if action is Action.LOCAL:
        return 0.05 + 0.23 + tokens / 75, not state.service_type.quality_preferred
    return 0.15 + 0.42 + tokens / 32, True


def long_output_outcome(state: TaskState, action: Action) -> tuple[float, bool]:
    """As ``paper_outcome``, but the edge also misses quality beyond 2,048 tokens: the best action depends on x's
    both keywords."""
    t_total_s, quality_met = paper_outcome(state, action)
    return t_total_s, quality_met and not (action is Action.LOCAL and state.token_bin == TOKEN_BINS[-1])


def test_env_follows_gymnasium_api():
    check_env(OffloadingEnv(paper_outcome, seed=0), skip_render_check=True)


def test_encoding_is_one_hot_and_distinct():
    vectors = {tuple(encode_state(state)) for state in keyword_grid()}
    assert len(vectors) == 35
    assert all(len(vector) == OBSERVATION_SIZE == 12 and sum(vector) == 2 for vector in vectors)


def test_env_samples_distribution_and_rewards_eq_10():
    env = OffloadingEnv(paper_outcome, distribution={CHAT: 1.0, CODING: 3.0}, seed=4)
    seen = []
    for _ in range(2000):
        observation, info = env.reset()
        assert np.array_equal(observation, encode_state(info["state"]))
        context = env.context()
        _, value, terminated, truncated, step_info = env.step(Action.LOCAL.alpha)
        assert (terminated, truncated) == (True, False)
        assert value == outcome_reward(env.reward_params, *context.outcome_of(Action.LOCAL))
        assert step_info["quality_met"] is (info["state"] is CHAT)
        seen.append(info["state"])
    assert within_sigmas(seen.count(CODING), 1500, 2000 * 0.75 * 0.25)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    with pytest.raises(ValueError, match="weight"):
        OffloadingEnv(paper_outcome, distribution={CHAT: 0.0})


# --- DQN ----------------------------------------------------------------------------------------------


async def oracle_actions(outcome) -> dict[TaskState, Action]:
    reference = OraclePolicy()
    return {
        state: (await reference.choose(state, DecisionContext(lambda action, s=state: outcome(s, action)))).action
        for state in keyword_grid()
    }


@pytest.mark.parametrize("outcome", [paper_outcome, long_output_outcome])
async def test_dqn_pretrained_matches_oracle(outcome):
    policy = DQNPolicy(seed=1)
    policy.pretrain(OffloadingEnv(outcome, seed=1), steps=1500)
    best = await oracle_actions(outcome)
    matches = sum(policy.greedy_action(state) is action for state, action in best.items())
    assert matches >= 0.9 * len(best)
    policy.training = False
    decision = await policy.choose(CODING, DecisionContext())
    assert (decision.action, decision.source) == (best[CODING], DecisionSource.BASELINE)
    assert set(decision.scores) == {"local", "offload"}


async def test_dqn_learns_online_from_experiences():
    policy = DQNPolicy(seed=2)
    rng = random.Random(2)
    states = keyword_grid()
    sources = []
    for _ in range(1200):
        state = rng.choice(states)
        decision = await policy.choose(state, DecisionContext())
        sources.append(decision.source)
        t_total_s, quality_met = paper_outcome(state, decision.action)
        value = outcome_reward(RewardParams(), t_total_s, quality_met)
        await policy.learn(Experience(state, decision.action, value, 0.0, t_total_s, quality_met))
    assert policy.transitions == 1200 and policy.updates > 1000
    assert sources[:50].count(DecisionSource.EXPLORE) > 40
    assert sources[-200:].count(DecisionSource.BASELINE) > 160
    best = await oracle_actions(paper_outcome)
    assert sum(policy.greedy_action(state) is action for state, action in best.items()) >= 0.9 * len(best)


def test_dqn_is_seeded_and_leaves_global_generators_alone():
    def run(seed: int) -> list[float]:
        policy = DQNPolicy(seed=seed)
        policy.pretrain(OffloadingEnv(paper_outcome, seed=0), steps=150)
        return [value for state in keyword_grid() for value in policy.q_values(state).values()]

    numpy_before, torch_before, python_before = (
        np.random.get_state()[1].copy(),
        torch.random.get_rng_state(),
        random.getstate(),
    )
    first = run(3)
    assert np.array_equal(np.random.get_state()[1], numpy_before)
    assert torch.equal(torch.random.get_rng_state(), torch_before)
    assert random.getstate() == python_before
    np.random.rand(5), torch.rand(5)  # other users of the global generators change nothing
    assert run(3) == first
    assert run(4) != first


async def test_frozen_dqn_neither_explores_nor_learns():
    policy = DQNPolicy(DQNParams(exploration="constant:1.0", learning_starts=1, batch_size=1), training=False)
    before = policy.q_values(CHAT)
    for _ in range(20):
        assert (await policy.choose(CHAT, DecisionContext())).source is DecisionSource.BASELINE
        await policy.learn(Experience(CHAT, Action.LOCAL, 25.0, 0.0, 5.0, True))
    assert policy.q_values(CHAT) == before and policy.transitions == 0
    with pytest.raises(RuntimeError, match="training=True"):
        policy.pretrain(OffloadingEnv(paper_outcome), steps=10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"hidden_sizes": ()}, "hidden_sizes"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"reward_scale": -1.0}, "reward_scale"),
        ({"exploration": "sometimes"}, "epsilon schedule"),
    ],
)
def test_dqn_params_are_validated(change, message):
    with pytest.raises(ValueError, match=message):
        DQNParams(**change)
