"""From served tasks to the numbers of Fig. 5 and to the paper's claims, each with a stated test.

Rewards are eq. 10 (``core.reward``) on each task's t_tran and t_gen. "Final" values are means over
the last ``FINAL_EPISODES`` episodes of a run, where exploration has had its chance; the thresholds that
turn a measured number into "held" or "not held" are constants here, stated in the claims table.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from edgecloud.core.reward import RewardParams, reward
from edgecloud.core.vocabulary import TaskState
from edgecloud.experiments.reproduce import SweepPoint
from edgecloud.experiments.runner import PolicyRun
from edgecloud.experiments.system import Served

FINAL_EPISODES = 10
"""Episodes at the end of a run over which its final reward and success rate are averaged."""
COMPARABLE_FRACTION = 0.10
"""'Comparable' rewards: within this fraction of the reward range between the oracle and the worst
fixed policy (always-edge or always-cloud) measured in the same run."""
STABLE_STANDARD_ERRORS = 2.0
"""'Converged': the means of the last two blocks of FINAL_EPISODES episodes differ by less than this many
standard errors of their difference (episode means are noisy: each episode draws a new task mix)."""
MIN_BLOCK_EPISODES = 2
"""A block needs two episodes for a variance."""


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@dataclass(frozen=True)
class EpisodeSeries:
    """Per-episode means of one run."""

    label: str
    policy: str
    reward: list[float]
    reward_regular: list[float]
    reward_quality: list[float]
    success_quality: list[float]
    delay_s: list[float]
    offload_share: list[float]
    offload_regular: list[float]
    llm_calls: int
    final_pool: dict[str, str]
    """The pool's decision per keyword state after the last episode (state key -> local/offload)."""

    def final(self, series: str, episodes: int = FINAL_EPISODES) -> float:
        values = [value for value in getattr(self, series)[-episodes:] if not math.isnan(value)]
        return mean(values)


def task_reward(params: RewardParams, item: Served) -> float:
    return reward(params, item.transmission_s, item.generation_s, item.quality_met)


def episode_series(run: PolicyRun, params: RewardParams) -> EpisodeSeries:
    def rewards(episode: list[Served], task_class: str | None = None) -> float:
        return mean([task_reward(params, item) for item in episode if task_class in (None, item.task.task_class)])

    return EpisodeSeries(
        label=run.label,
        policy=run.policy,
        reward=[rewards(episode) for episode in run.episodes],
        reward_regular=[rewards(episode, "regular") for episode in run.episodes],
        reward_quality=[rewards(episode, "quality") for episode in run.episodes],
        success_quality=[
            mean([float(item.quality_met) for item in episode if item.task.quality_preferred])
            for episode in run.episodes
        ],
        delay_s=[mean([item.total_s for item in episode]) for episode in run.episodes],
        offload_share=[mean([float(item.action.alpha) for item in episode]) for episode in run.episodes],
        offload_regular=[
            mean([float(item.action.alpha) for item in episode if not item.task.quality_preferred])
            for episode in run.episodes
        ],
        llm_calls=run.llm_calls,
        final_pool={example.state.key: example.action.value for example in run.final_pool},
    )


@dataclass(frozen=True)
class Claim:
    panel: str
    paper: str
    measured: str
    held: str  # "yes", "no", "partly" or "n/a"


def _by_policy(series: Sequence[EpisodeSeries]) -> dict[str, list[EpisodeSeries]]:
    grouped: dict[str, list[EpisodeSeries]] = {}
    for item in series:
        grouped.setdefault(item.policy, []).append(item)
    return grouped


def learning_claims(series: Sequence[EpisodeSeries]) -> list[Claim]:
    runs = _by_policy(series)
    oracle, dqn = runs["oracle"][0], runs["dqn"][0]
    worst = min(runs["always_edge"][0].final("reward"), runs["always_cloud"][0].final("reward"))
    span = oracle.final("reward") - worst
    claims = []
    for icl in [*runs["icl"], *runs.get("icl_paper", [])]:  # the shipped method, then the paper's beside it
        claims.append(_convergence_claim(icl))
        gap = icl.final("reward") - dqn.final("reward")
        claims.append(
            Claim(
                "a",
                "ICL (Llama3-8B, GPT-4o) achieves performance comparable to the DRL baseline.",
                f"final reward {icl.label} {icl.final('reward'):.2f} (regular {icl.final('reward_regular'):.2f}, "
                f"quality-preferred {icl.final('reward_quality'):.2f}) vs DQN {dqn.final('reward'):.2f}, "
                f"both after {len(icl.reward)} episodes; the final pool shows {_pool_summary(icl)}; "
                f"oracle {oracle.final('reward'):.2f}; gap {gap:+.2f} "
                f"(comparable if within {COMPARABLE_FRACTION:.0%} of {span:.2f})",
                "yes" if abs(gap) <= COMPARABLE_FRACTION * span or gap > 0 else "no",
            )
        )
        success = icl.final("success_quality")
        claims.append(
            Claim(
                "b",
                "ICL offloads properly: quality-preferred tasks meet their requirement.",
                f"success rate of quality-preferred tasks, last {FINAL_EPISODES} episodes: {icl.label} "
                f"{success:.0%}, DQN {dqn.final('success_quality'):.0%}, "
                f"oracle {oracle.final('success_quality'):.0%}, "
                f"always-edge {runs['always_edge'][0].final('success_quality'):.0%}; share of regular tasks "
                f"offloaded by {icl.label}: {icl.final('offload_regular'):.0%} "
                f"(oracle {oracle.final('offload_regular'):.0%})",
                "yes" if success >= oracle.final("success_quality") - COMPARABLE_FRACTION else "no",
            )
        )
    claims.extend(_replay_claims(runs, dqn, span))
    return claims


def _convergence_claim(icl: EpisodeSeries) -> Claim:
    """Stable: the last two blocks of episodes (FINAL_EPISODES each, or halves of a shorter run) agree within
    STABLE_STANDARD_ERRORS standard errors of their difference."""
    paper = "All task classes converge to a stable reward after exploration."
    block = min(FINAL_EPISODES, len(icl.reward) // 2)
    if block < MIN_BLOCK_EPISODES:
        return Claim("a", paper, f"{icl.label}: {len(icl.reward)} episodes are too few to tell", "n/a")
    earlier, last = icl.reward[-2 * block : -block], icl.reward[-block:]
    drift = abs(mean(last) - mean(earlier))
    noise = math.sqrt(sum(statistics.variance(values) / len(values) for values in (earlier, last)))
    first = len(icl.reward) - 2 * block + 1
    return Claim(
        "a",
        paper,
        f"{icl.label}: mean reward of episodes {first}-{first + block - 1} {mean(earlier):.2f}, of the last "
        f"{block} {mean(last):.2f} (drift {drift:.2f}; stable if < {STABLE_STANDARD_ERRORS:g} standard errors "
        f"= {STABLE_STANDARD_ERRORS * noise:.2f})",
        "yes" if drift < STABLE_STANDARD_ERRORS * noise else "no",
    )


def _pool_summary(series: EpisodeSeries) -> str:
    """How the pool's examples decide, by task class: what prioritized replay has learned to show the LLM."""
    parts = []
    for task_class, wanted in (("regular", "local"), ("quality-preferred", "offload")):
        actions = [
            action
            for key, action in series.final_pool.items()
            if TaskState.from_key(key).service_type.quality_preferred == (task_class != "regular")
        ]
        parts.append(
            f"{wanted} for {sum(action == wanted for action in actions)} of {len(actions)} {task_class} states"
        )
    return ", ".join(parts)


def _replay_claims(runs: dict[str, list[EpisodeSeries]], dqn: EpisodeSeries, span: float) -> list[Claim]:
    claims = []
    for icl in [*runs["icl"], *runs.get("icl_paper", [])]:
        gap = icl.final("reward") - dqn.final("reward")
        claims.append(
            Claim(
                "c",
                "Prioritized replay obtains performance comparable to the DRL baseline.",
                f"final reward {icl.label} {icl.final('reward'):.2f} vs DQN {dqn.final('reward'):.2f} (gap {gap:+.2f})",
                "yes" if abs(gap) <= COMPARABLE_FRACTION * span or gap > 0 else "no",
            )
        )
    for icl, latest, greedy in zip(runs["icl"], runs["icl_latest"], runs["icl_greedy"], strict=True):
        lower = [latest.final("reward") < icl.final("reward"), greedy.final("reward") < icl.final("reward")]
        claims.append(
            Claim(
                "c",
                "Latest-experience replay and no exploration give lower rewards than prioritized replay.",
                f"final reward: prioritized {icl.final('reward'):.2f}, latest {latest.final('reward'):.2f}, "
                f"no exploration {greedy.final('reward'):.2f}",
                "yes" if all(lower) else "partly" if any(lower) else "no",
            )
        )
    return claims


def sweep_claims(points: Sequence[SweepPoint]) -> list[Claim]:
    claims = []
    pairs = list(dict.fromkeys(point.pair for point in points))
    share = [point for point in points if point.axis == "quality_share"]
    rising = {pair: [point.mean_delay_s for point in share if point.pair == pair] for pair in pairs}
    monotone = {pair: all(b > a for a, b in itertools.pairwise(delays)) for pair, delays in rising.items()}
    claims.append(
        Claim(
            "f",
            "A larger share of quality-preferred tasks, offloaded to the cloud, raises the service delay.",
            "; ".join(f"{pair}: {' → '.join(f'{delay:.1f}' for delay in delays)} s" for pair, delays in rising.items()),
            "yes" if all(monotone.values()) else "partly" if any(monotone.values()) else "no",
        )
    )
    fastest = "Gemma-7B + Gemini-1.5-Pro"
    wins, total = 0, 0
    for axis in ("users", "mean_output_tokens", "quality_share"):
        for value in dict.fromkeys(point.value for point in points if point.axis == axis):
            at = {point.pair: point.mean_delay_s for point in points if point.axis == axis and point.value == value}
            total += 1
            wins += min(at, key=lambda pair: at[pair]) == fastest
    claims.append(
        Claim(
            "d-f",
            "Gemma 7B + Gemini 1.5 Pro has the lowest overall delay of the three pairs.",
            f"{fastest} lowest at {wins} of {total} sweep points",
            "yes" if wins == total else "partly" if wins else "no",
        )
    )
    return claims
