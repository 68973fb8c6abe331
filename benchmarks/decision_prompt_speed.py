"""How long the decision LLM takes per pool version: the first x (cold prefill) and the other states.

The experiment's shape: a pool of one example per state for the five task kinds of Fig. 5 and three
token bins (15 examples, a ~700-token meta-prompt); each version is a new pool (new rewards), scored first
for one state, then for the other 14 (vLLM's prefix cache holds the shared part), then all 15 at once.

    .venv/bin/python benchmarks/decision_prompt_speed.py --base-url http://127.0.0.1:8001/v1

Run it against two vLLM instances side by side to compare launch options (BENCHMARKS.md: dtype).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from edgecloud.core.vocabulary import TOKEN_BINS, Action, ServiceType, TaskState
from edgecloud.decision.experience import Experience
from edgecloud.decision.prompt import candidate_completions, render_meta_prompt
from edgecloud.decision.scoring import make_scorer

TYPES = (
    ServiceType.CHAT,
    ServiceType.TRANSLATION,
    ServiceType.SUMMARIZATION,
    ServiceType.SCIENCE_REASONING,
    ServiceType.CODING,
)
BINS = TOKEN_BINS[1:4]  # 129-512, 513-1024, 1025-2048: where 1,000 +- 50 % tokens fall
REWARD_RANGE = (-40.0, 20.0)
GENERATION_S = 13.0


def random_pool(states: list[TaskState], rng: random.Random) -> list[Experience]:
    return [
        Experience(state, rng.choice(list(Action)), rng.uniform(*REWARD_RANGE), 0.01, GENERATION_S, True)
        for state in states
    ]


async def main(base_url: str, model: str, versions: int) -> None:
    scorer = make_scorer("auto", base_url, model, None, 600)
    states = [TaskState(kind, label) for kind in TYPES for label in BINS]
    rng = random.Random(0)
    try:
        for version in range(versions):
            pool = random_pool(states, rng)
            started = time.perf_counter()
            await scorer.score(render_meta_prompt(states[0], pool), candidate_completions())
            first = time.perf_counter() - started
            for state in states[1:]:
                await scorer.score(render_meta_prompt(state, pool), candidate_completions())
            rest = time.perf_counter() - started - first
            print(f"version {version}: first state {first:.2f} s, other {len(states) - 1} states {rest:.2f} s")
        pool = random_pool(states, rng)
        started = time.perf_counter()
        await asyncio.gather(*(scorer.score(render_meta_prompt(s, pool), candidate_completions()) for s in states))
        print(f"all {len(states)} states of a new version at once: {time.perf_counter() - started:.2f} s")
        print(f"meta-prompt: {len(render_meta_prompt(states[0], pool))} characters")
    finally:
        await scorer.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8001/v1")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--versions", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.base_url, arguments.model, arguments.versions))
