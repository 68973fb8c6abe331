"""Decision consistency: does the LLM's argmax (eq. 6) follow a consistent experience pool?

For every x of the keyword grid (7 service types x 5 output-length bins), the meta-prompt is
rendered with a CONSISTENT pool: one Good example per keyword state whose decision follows a fixed
rule (quality-preferred type or more than 1,024 output tokens -> offload, else local) with the
reward eq. 10 gives that decision under the paper's delays. Each prompt is scored with the
prompt-log-probability path (eq. 5) and the argmax compared with the pool's decision for the same
keywords. Then again with the pool INVERTED (every decision flipped, same rewards): a model that
reads the examples follows them both times; one that ignores them cannot agree with both.

    .venv/bin/python benchmarks/decision_consistency.py --base-url http://127.0.0.1:8001/v1 \
        --model smollm2-135m-instruct

Prints a markdown table (agreement per service type) and writes benchmarks/results/decision_consistency.json.
On vLLM the token-id path reads the pool's prompt from the prefix cache: one cold prefill per pool,
then about a second per state on CPU. ``--method echo`` forces the echo path (no prefix cache in vLLM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from edgecloud.decision.experience import Experience
from edgecloud.decision.keywords import TOKEN_BINS, Action, ServiceType, TaskState, keyword_grid
from edgecloud.decision.llm_endpoint import OpenAIEndpoint
from edgecloud.decision.prompt import candidate_completions, render_meta_prompt
from edgecloud.decision.reward import RewardParams, reward
from edgecloud.decision.scoring import CachedPromptLogprobScorer, PromptLogprobScorer, Scorer, make_scorer

DEFAULT_OUT = Path(__file__).parent / "results" / "decision_consistency.json"
# The rule of the consistent pool: these bins are long enough to send to the cloud whatever the type.
LONG_BINS = frozenset(TOKEN_BINS[3:])  # 1025-2048, >2048
# A representative output length per bin (tokens), for the examples' delays and rewards.
BIN_TOKENS = dict(zip(TOKEN_BINS, (64, 320, 768, 1536, 3072), strict=True))
# Paper section IV-A: edge Llama3-8B TTFT 0.23 s, TPOT 1/75 s; cloud GPT-4o TTFT 0.42 s, TPOT 1/32 s.
EDGE_TTFT_S, EDGE_TPOT_S = 0.23, 1 / 75
CLOUD_TTFT_S, CLOUD_TPOT_S = 0.42, 1 / 32
# Ours: radio transmission of the answer, and the extra backhaul when offloaded.
TRANSMISSION_S, BACKHAUL_S = 0.3, 0.1


def rule(state: TaskState) -> Action:
    """The consistent pool's decision for ``state``."""
    long = state.token_bin in LONG_BINS
    return Action.OFFLOAD if state.service_type.quality_preferred or long else Action.LOCAL


def example(state: TaskState, action: Action) -> Experience:
    """A Good example: the delays of ``action`` for the bin's length, and the reward eq. 10 gives them."""
    tokens = BIN_TOKENS[state.token_bin]
    if action is Action.OFFLOAD:
        transmission, generation = TRANSMISSION_S + BACKHAUL_S, CLOUD_TTFT_S + tokens * CLOUD_TPOT_S
    else:
        transmission, generation = TRANSMISSION_S, EDGE_TTFT_S + tokens * EDGE_TPOT_S
    value = reward(RewardParams(), transmission, generation, quality_met=True)
    return Experience(state, action, round(value, 2), transmission, generation, quality_met=True, source="benchmark")


def pool(inverted: bool) -> list[Experience]:
    flip = {Action.LOCAL: Action.OFFLOAD, Action.OFFLOAD: Action.LOCAL}
    return [example(state, flip[rule(state)] if inverted else rule(state)) for state in keyword_grid()]


def make(method: str, base_url: str, model: str, api_key: str | None, timeout_s: float) -> Scorer:
    if method == "prompt_logprobs":
        return make_scorer("prompt_logprobs", base_url, model, api_key=api_key, timeout_s=timeout_s)
    endpoint = OpenAIEndpoint(base_url, model, api_key=api_key, timeout_s=timeout_s)
    return CachedPromptLogprobScorer(endpoint) if method == "token_ids" else PromptLogprobScorer(endpoint)


async def score_pool(scorer: Scorer, examples: list[Experience]) -> list[dict]:
    expected = {e.state: e.action for e in examples}
    records = []
    for state in keyword_grid():
        started = time.perf_counter()
        result = await scorer.score(render_meta_prompt(state, examples), candidate_completions())
        records.append(
            {
                "state": state.key,
                "expected": expected[state].value,
                "chosen": result.action.value,
                "agree": result.action is expected[state],
                "scores": result.scores_by_name(),
                "method": result.method,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        print(f"  {state.key:34s} pool={expected[state].value:7s} argmax={result.action.value}", file=sys.stderr)
    return records


def agreement(records: list[dict], service_type: ServiceType | None = None) -> float:
    chosen = [r for r in records if service_type is None or r["state"].startswith(f"{service_type.value}|")]
    return 100.0 * sum(r["agree"] for r in chosen) / len(chosen)


def majority_baseline(records: list[dict]) -> float:
    """The agreement of always answering the pool's most frequent decision (a model ignoring the keywords)."""
    expected = [r["expected"] for r in records]
    return 100.0 * max(expected.count(action.value) for action in Action) / len(expected)


def mean_margin(records: list[dict]) -> float:
    """Mean of log Pr(offload) - log Pr(local): how far the examples move the scores, flipped or not."""
    return statistics.fmean(r["scores"]["offload"] - r["scores"]["local"] for r in records)


def table(runs: dict[str, list[dict]]) -> str:
    names = ("consistent", "inverted")
    lines = ["| service type | consistent pool: agreement | inverted pool: agreement |", "|---|---:|---:|"]
    for service_type in ServiceType:
        cells = " | ".join(f"{agreement(runs[name], service_type):.0f} %" for name in names)
        lines.append(f"| {service_type.value} | {cells} |")
    cells = " | ".join(f"**{agreement(runs[name]):.1f} %**" for name in names)
    lines.append(f"| all ({len(keyword_grid())} states) | {cells} |")
    cells = " | ".join(f"{majority_baseline(runs[name]):.1f} %" for name in names)
    lines.append(f"| reference: always the pool's majority decision | {cells} |")
    cells = " | ".join(f"{mean_margin(runs[name]):+.2f}" for name in names)
    lines.append(f"| mean log Pr(offload) - log Pr(local), nats | {cells} |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict:
    scorer = make(args.method, args.base_url, args.model, os.environ.get("OPENAI_API_KEY"), args.timeout)
    runs: dict[str, list[dict]] = {}
    started = time.perf_counter()
    try:
        for name, inverted in (("consistent", False), ("inverted", True)):
            print(f"{name} pool:", file=sys.stderr)
            runs[name] = await score_pool(scorer, pool(inverted))
    finally:
        await scorer.aclose()
    differ = sum(a["chosen"] != b["chosen"] for a, b in zip(runs["consistent"], runs["inverted"], strict=True))
    return {
        "command": shlex.join(["python", "benchmarks/decision_consistency.py", *sys.argv[1:]]),
        "base_url": args.base_url,
        "model": args.model,
        "method": sorted({r["method"] for records in runs.values() for r in records}),
        "rule": "quality-preferred service type or > 1024 output tokens -> offload, else local",
        "states": len(keyword_grid()),
        "agreement_pct": {name: round(agreement(records), 1) for name, records in runs.items()},
        "agreement_pct_by_service_type": {
            name: {st.value: round(agreement(records, st), 1) for st in ServiceType} for name, records in runs.items()
        },
        "majority_baseline_pct": {name: round(majority_baseline(records), 1) for name, records in runs.items()},
        "mean_margin_offload_minus_local": {name: round(mean_margin(records), 3) for name, records in runs.items()},
        "argmax_differs_between_pools": differ,
        "wall_s": round(time.perf_counter() - started, 1),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="OpenAI base URL with /v1, e.g. http://127.0.0.1:8001/v1")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument(
        "--method",
        choices=("prompt_logprobs", "token_ids", "echo"),
        default="prompt_logprobs",
        help="prompt_logprobs: token ids where the endpoint has them (vLLM), else echo",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per request, seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{table(report['runs'])}\n")
    print(
        f"argmax differs between the two pools for {report['argmax_differs_between_pools']}/{report['states']} "
        f"states; method {', '.join(report['method'])}; {report['wall_s']} s"
    )
    print(f"command: {report['command']}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
