"""Decision consistency on the whole keyword grid: does the LLM's argmax (eq. 6) follow the pool?

For each of the 35 keyword states x (7 service types x 5 output-length bins) the meta-prompt is built
by the ICL policy's own method (``decision.icl_method.IclMethod``) from a pool holding one Good
example per state, and scored with the prompt-log-probability path (eq. 5). Agreement = the share of
states whose argmax equals the pool's decision for the same keywords. Four pools, each with the reward
eq. 10 gives its decision under the paper's delays:

- consistent: the paper's rule (quality-preferred type or more than 1,024 output tokens -> offload);
- inverted: every decision of the consistent pool flipped (quality-preferred short tasks stay local);
- by_bin: by output length only (up to 512 tokens local, longer offload), whatever the type;
- random_rule: a random decision per state, from a fixed seed.

A model that reads its examples follows all four; one that follows the task description or its own
bias cannot. Every variant of the method is measured in the same run: example selection (the paper's
whole pool, or the k nearest with the nearest last), the task description (the paper's text, which
names the answers; ours without the names, with or without the quality hint), the candidate score
(sum = eq. 5, first token, mean per token) and contextual calibration (content-free query). Variants
that differ only in scoring share the same LLM calls. A secondary measure, leave-one-out: each state's
own example removed, does the method still give the structured pools' rule (generalisation to states
the pool has not seen)?

    .venv/bin/python benchmarks/decision_consistency.py --base-url http://127.0.0.1:8001/v1 \\
        --model smollm2-135m-instruct

Writes benchmarks/results/decision_consistency.json: per variant the agreement with each pool as a
fraction, the majority-answer baseline per pool, the shipped default and the paper's method named.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from edgecloud.core.reward import RewardParams, reward
from edgecloud.core.vocabulary import TOKEN_BINS, Action, TaskState, keyword_grid
from edgecloud.decision.experience import Experience
from edgecloud.decision.icl_method import PAPER_METHOD, CandidateScore, IclMethod
from edgecloud.decision.llm_endpoint import PathUnsupported, ScoringError
from edgecloud.decision.prompt import PAPER_TEXT, PromptText, candidate_completions
from edgecloud.decision.retrieval import ExampleSelection
from edgecloud.decision.scoring import Scorer, ScoreResult, argmax, make_scorer
from edgecloud.decision.settings import DecisionSettings

DEFAULT_OUT = Path(__file__).parent / "results" / "decision_consistency.json"
# The consistent pool's rule: these bins are long enough to send to the cloud whatever the type.
LONG_BINS = frozenset(TOKEN_BINS[3:])  # 1025-2048, >2048
# The by-bin pool's rule: up to this bin local, longer offload.
BY_BIN_LAST_LOCAL = TOKEN_BINS[1]  # 129-512
RANDOM_RULE_SEED = 11
# A representative output length per bin (tokens), for the examples' delays and rewards.
BIN_TOKENS = dict(zip(TOKEN_BINS, (64, 320, 768, 1536, 3072), strict=True))
# Paper section IV-A: edge Llama3-8B TTFT 0.23 s, TPOT 1/75 s; cloud GPT-4o TTFT 0.42 s, TPOT 1/32 s.
EDGE_TTFT_S, EDGE_TPOT_S = 0.23, 1 / 75
CLOUD_TTFT_S, CLOUD_TPOT_S = 0.42, 1 / 32
# Ours: radio transmission of the answer, and the extra backhaul when offloaded.
TRANSMISSION_S, BACKHAUL_S = 0.3, 0.1
FLIP = {Action.LOCAL: Action.OFFLOAD, Action.OFFLOAD: Action.LOCAL}
# The task descriptions measured: the paper's (names the answers, quality hint) and ours without the names.
TEXTS = {
    "paper-text": PAPER_TEXT,
    "hint": PromptText(name_candidates=False, quality_hint=True),
    "no-hint": PromptText(name_candidates=False, quality_hint=False),
}
NEAREST_K = (1, 2, 4, 8)
STRUCTURED_POOLS = ("consistent", "inverted", "by_bin")
"""Pools whose rule a method can infer for a state it has no example of (leave-one-out)."""
CONCURRENCY = 4
"""Prompts in flight at once: vLLM batches them; more only queue on 2 cores."""
ATTEMPTS = 3
"""Tries per prompt: a transport error on one of thousands must not end the run."""


def paper_rule(state: TaskState) -> Action:
    long = state.token_bin in LONG_BINS
    return Action.OFFLOAD if state.service_type.quality_preferred or long else Action.LOCAL


def rules() -> dict[str, Callable[[TaskState], Action]]:
    draw = random.Random(RANDOM_RULE_SEED)
    random_actions = {state: draw.choice(list(Action)) for state in keyword_grid()}
    local_bins = TOKEN_BINS[: TOKEN_BINS.index(BY_BIN_LAST_LOCAL) + 1]
    return {
        "consistent": paper_rule,
        "inverted": lambda state: FLIP[paper_rule(state)],
        "by_bin": lambda state: Action.LOCAL if state.token_bin in local_bins else Action.OFFLOAD,
        "random_rule": random_actions.__getitem__,
    }


RULE_TEXT = {
    "consistent": "quality-preferred service type or > 1024 output tokens -> offload, else local",
    "inverted": "the consistent rule flipped",
    "by_bin": f"up to {BY_BIN_LAST_LOCAL} output tokens local, longer offload, whatever the type",
    "random_rule": f"a random decision per state (random.Random({RANDOM_RULE_SEED}))",
}


def example(state: TaskState, action: Action) -> Experience:
    """A Good example: the delays of ``action`` for the bin's length, and the reward eq. 10 gives them."""
    tokens = BIN_TOKENS[state.token_bin]
    if action is Action.OFFLOAD:
        transmission, generation = TRANSMISSION_S + BACKHAUL_S, CLOUD_TTFT_S + tokens * CLOUD_TPOT_S
    else:
        transmission, generation = TRANSMISSION_S, EDGE_TTFT_S + tokens * EDGE_TPOT_S
    value = reward(RewardParams(), transmission, generation, quality_met=True)
    return Experience(state, action, round(value, 2), transmission, generation, quality_met=True, source="benchmark")


def pools() -> dict[str, list[Experience]]:
    """Each pool in pool order (by keyword key, as the experience pools keep it)."""
    built = {}
    for name, rule in rules().items():
        examples = [example(state, rule(state)) for state in keyword_grid()]
        built[name] = sorted(examples, key=lambda item: item.state.key)
    return built


def prompt_methods() -> dict[str, IclMethod]:
    """One method per distinct set of prompts (selection x description); scoring variants come later."""
    base = replace(PAPER_METHOD, candidate_score=CandidateScore.SUM, calibrate=False)
    methods = {}
    for text_name, text in TEXTS.items():
        methods[f"pool/{text_name}"] = replace(base, selection=ExampleSelection.POOL, text=text)
        for k in NEAREST_K:
            methods[f"nearest-k{k}/{text_name}"] = replace(base, selection=ExampleSelection.NEAREST, k=k, text=text)
    return methods


def variant_name(prompts: str, score: CandidateScore, calibrate: bool) -> str:
    return f"{prompts}/{score.value}{'+calibrated' if calibrate else ''}"


def method_name(method: IclMethod) -> str:
    selection = "pool" if method.selection is ExampleSelection.POOL else f"nearest-k{method.k}"
    text = next(name for name, text in TEXTS.items() if text == method.text)
    return variant_name(f"{selection}/{text}", method.candidate_score, method.calibrate)


class PromptScores:
    """Every distinct prompt scored once, CONCURRENCY at a time."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.results: dict[str, ScoreResult] = {}
        self._gate = asyncio.Semaphore(CONCURRENCY)

    async def score_all(self, prompts: set[str]) -> None:
        async def one(prompt: str) -> None:
            async with self._gate:
                for attempt in range(1, ATTEMPTS + 1):
                    try:
                        self.results[prompt] = await self.scorer.score(prompt, candidate_completions())
                        return
                    except ScoringError as error:
                        if isinstance(error, PathUnsupported) or attempt == ATTEMPTS:
                            raise
                        print(f"  retrying a prompt after: {error}", file=sys.stderr)

        await asyncio.gather(*(one(prompt) for prompt in sorted(prompts - set(self.results))))


def prompts_of(method: IclMethod, pool: list[Experience], leave_one_out: bool = False) -> list[tuple[str, str]]:
    """Per state, (query prompt, content-free prompt) after the examples the method shows."""
    pairs = []
    for state in keyword_grid():
        examples = [item for item in pool if not (leave_one_out and item.state == state)]
        shown = method.shown(examples, state)
        pairs.append((method.prompt(state, shown), method.prompt(None, shown)))
    return pairs


def agreement(decided: list[Action], rule: Callable[[TaskState], Action]) -> float:
    expected = [rule(state) for state in keyword_grid()]
    return sum(a is b for a, b in zip(decided, expected, strict=True)) / len(expected)


def majority_baseline(rule: Callable[[TaskState], Action]) -> float:
    """The agreement of always answering the pool's most frequent decision (a model ignoring the keywords)."""
    expected = [rule(state) for state in keyword_grid()]
    return max(expected.count(action) for action in Action) / len(expected)


async def run(args: argparse.Namespace) -> dict:
    scorer = make_scorer("prompt_logprobs", args.base_url, args.model, os.environ.get("OPENAI_API_KEY"), args.timeout)
    scores = PromptScores(scorer)
    rule_of, pool_of = rules(), pools()
    methods = prompt_methods()
    started = time.perf_counter()
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    try:
        for prompts, method in methods.items():
            for pool_name, pool in pool_of.items():
                pairs[prompts, pool_name] = prompts_of(method, pool)
            await scores.score_all(
                {prompt for pool_name in pool_of for pair in pairs[prompts, pool_name] for prompt in pair}
            )
            print(
                f"  {prompts}: {len(scores.results)} prompts scored, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
        loo = {}
        for prompts, method in methods.items():
            if (
                method.selection is ExampleSelection.NEAREST and method.text == TEXTS["hint"]
            ) or prompts == "pool/paper-text":
                for pool_name in STRUCTURED_POOLS:
                    loo[prompts, pool_name] = prompts_of(method, pool_of[pool_name], leave_one_out=True)
        await scores.score_all({query for pairs_ in loo.values() for query, _ in pairs_})
    finally:
        await scorer.aclose()

    def decide(pair_list: list[tuple[str, str]], method: IclMethod) -> list[Action]:
        decided = []
        for query, content_free in pair_list:
            calibration = scores.results[content_free] if method.calibrate else None
            decided.append(argmax(method.scores(scores.results[query], calibration)))
        return decided

    variants: dict[str, dict] = {}
    chosen: dict[str, dict[str, list[str]]] = {}
    for (prompts, method), score, calibrate in itertools.product(methods.items(), CandidateScore, (False, True)):
        scored = replace(method, candidate_score=score, calibrate=calibrate)
        name = variant_name(prompts, score, calibrate)
        entry: dict = {}
        for pool_name in pool_of:
            decided = decide(pairs[prompts, pool_name], scored)
            entry[pool_name] = round(agreement(decided, rule_of[pool_name]), 4)
            chosen.setdefault(name, {})[pool_name] = [action.value for action in decided]
        if not calibrate and score is CandidateScore.SUM and any(key[0] == prompts for key in loo):
            entry["leave_one_out"] = {
                pool_name: round(agreement(decide(loo[prompts, pool_name], scored), rule_of[pool_name]), 4)
                for pool_name in STRUCTURED_POOLS
            }
        variants[name] = entry
    default_name, paper_name = method_name(DecisionSettings().icl_method()), method_name(PAPER_METHOD)
    return {
        "command": shlex.join(["python", "benchmarks/decision_consistency.py", *sys.argv[1:]]),
        "base_url": args.base_url,
        "model": args.model,
        "method": "prompt_logprobs (token ids through vLLM's prefix cache where offered)",
        "states": len(keyword_grid()),
        "pools": {
            name: {"rule": RULE_TEXT[name], "majority_baseline": round(majority_baseline(rule_of[name]), 4)}
            for name in pool_of
        },
        "default": default_name,
        "paper": paper_name,
        "variants": variants,
        "decisions": {name: chosen[name] for name in (default_name, paper_name)},
        "prompts_scored": len(scores.results),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def table(report: dict) -> str:
    names = list(report["pools"])
    lines = [
        f"| variant | {' | '.join(names)} | leave-one-out ({', '.join(STRUCTURED_POOLS)}) |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for variant, entry in report["variants"].items():
        marks = " (default)" if variant == report["default"] else " (paper)" if variant == report["paper"] else ""
        loo = entry.get("leave_one_out")
        loo_text = " / ".join(f"{loo[name]:.0%}" for name in STRUCTURED_POOLS) if loo else ""
        lines.append(f"| {variant}{marks} | {' | '.join(f'{entry[name]:.1%}' for name in names)} | {loo_text} |")
    baseline = " | ".join(f"{report['pools'][name]['majority_baseline']:.1%}" for name in names)
    lines.append(f"| reference: always the pool's majority decision | {baseline} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="OpenAI base URL with /v1, e.g. http://127.0.0.1:8001/v1")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--timeout", type=float, default=600.0, help="per request, seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{table(report)}\n")
    print(f"{report['prompts_scored']} prompts in {report['wall_s']} s; command: {report['command']}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
