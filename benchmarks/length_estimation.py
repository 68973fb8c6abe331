"""Output-length estimation: the gateway's estimator (median of the last N observed lengths per service
type) against the baseline of always answering the prior, online, request after request.

Each request of a scenario has a true output length drawn, seeded, from that scenario's distribution
for its service type. The estimator is asked first (no ``max_tokens``: that case returns the client's
number and has nothing to measure), then told the true length, as the gateway does when a request
ends. Reported per service type: mean absolute error in tokens, mean relative error, and bin accuracy,
the share of requests whose estimate falls in the same token bin as the true length (the bin is what
the decision sees, paper eq. 8). The oracle column answers the true median of the distribution the
length was drawn from: the ceiling of any median estimator, below 100% because lengths spread.

Scenarios:
  corpus            real answers: the reference answers of the simulator corpus
                    (llmsim/data/corpus.jsonl, 6 to 8 per type) counted with SmolLM2's tokenizer and
                    resampled with replacement; their lengths span 262 to 467 tokens
  lognormal-prior   lognormal around the prior (median = prior): the prior is as good as any constant,
                    this shows what the estimator costs when the prior happens to be right
  lognormal-corpus  lognormal around each type's corpus median: a spread like real LLM output lengths,
                    with the prior wrong
  drift             lognormal-corpus whose medians triple halfway (a longer-winded model is deployed):
                    how fast the window catches up

The prior is the gateway's: 1,000 tokens for every type, the paper's average output (Sec. IV-A). The
lognormal sigma (default 0.6, about a factor 1.8 between the median and the 84th percentile) is an
assumption, not a measurement. Runs in-process unless ``--redis-url`` is given (same statistic, the
numbers are identical; that run also checks the Redis path end to end).

    .venv/bin/python benchmarks/length_estimation.py [--requests-per-type 1000] [--redis-url redis://...]

Prints a table per scenario and writes benchmarks/results/length_estimation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from edgecloud.core.vocabulary import ServiceType
from edgecloud.gateway.lengths import (
    DEFAULT_WINDOW,
    MIN_OBSERVATIONS,
    EstimationError,
    OutputLengthEstimator,
    estimation_error,
)
from edgecloud.llmsim.content import TokenCodec, load_corpus

DEFAULT_OUT = Path(__file__).parent / "results" / "length_estimation.json"
# The gateway's prior (service.py OUTPUT_TOKENS_PRIOR): the paper's average output of 1,000 tokens.
PRIOR_TOKENS = 1000
DEFAULT_SIGMA = 0.6
DRIFT_FACTOR = 3.0
Draw = Callable[[ServiceType, int], int]  # (service type, request number within the type) -> true length
Median = Callable[[ServiceType, int], float]  # the same -> the median of the distribution drawn from


def corpus_lengths() -> dict[ServiceType, list[int]]:
    codec = TokenCodec()
    lengths: dict[ServiceType, list[int]] = {service_type: [] for service_type in ServiceType}
    for entry in load_corpus():
        lengths[ServiceType(entry.task)].append(codec.count(entry.answer))
    return lengths


def scenarios(rng: np.random.Generator, sigma: float, per_type: int) -> dict[str, tuple[Draw, Median]]:
    """Each scenario's draw and the true median it draws around (the oracle a median estimator aims at)."""
    real = corpus_lengths()
    medians = {service_type: statistics.median(values) for service_type, values in real.items()}

    def lognormal(median: float) -> int:
        return max(1, round(float(rng.lognormal(math.log(median), sigma))))

    def corpus_median(service_type: ServiceType, _: int) -> float:
        return medians[service_type]

    def drift_median(service_type: ServiceType, number: int) -> float:
        return medians[service_type] * (DRIFT_FACTOR if number >= per_type // 2 else 1.0)

    return {
        "corpus": (lambda service_type, _: int(rng.choice(real[service_type])), corpus_median),
        "lognormal-prior": (lambda service_type, _: lognormal(PRIOR_TOKENS), lambda _, __: PRIOR_TOKENS),
        "lognormal-corpus": (
            lambda service_type, number: lognormal(corpus_median(service_type, number)),
            corpus_median,
        ),
        "drift": (lambda service_type, number: lognormal(drift_median(service_type, number)), drift_median),
    }


def summary(error: EstimationError) -> dict[str, float]:
    return {
        "mae_tokens": round(error.mean_absolute_tokens, 1),
        "mean_relative_error": round(error.mean_relative, 3),
        "bin_accuracy": round(error.bin_accuracy, 3),
    }


async def run_scenario(
    draw: Draw, median: Median, order: list[ServiceType], args: argparse.Namespace
) -> dict[str, Any]:
    priors = {service_type: PRIOR_TOKENS for service_type in ServiceType}
    prefix = f"benchmark:lengths:{uuid.uuid4().hex}"  # a fresh, empty store on a shared Redis
    lengths = OutputLengthEstimator(args.redis_url, priors, key_prefix=prefix, window=args.window)
    await lengths.start()
    if args.redis_url and not lengths.redis_available:
        sys.exit(f"Redis at {args.redis_url} does not answer")
    estimates: dict[ServiceType, list[int]] = {service_type: [] for service_type in ServiceType}
    truths: dict[ServiceType, list[int]] = {service_type: [] for service_type in ServiceType}
    oracle: dict[ServiceType, list[int]] = {service_type: [] for service_type in ServiceType}
    started = time.perf_counter()
    try:
        for service_type in order:
            number = len(truths[service_type])
            truth = draw(service_type, number)
            oracle[service_type].append(max(1, round(median(service_type, number))))
            estimates[service_type].append((await lengths.estimate(service_type, None)).tokens)
            truths[service_type].append(truth)
            await lengths.observe(service_type, truth)
        if args.redis_url and not lengths.redis_available:
            sys.exit("Redis failed during the run; the numbers would mix the Redis and in-process paths")
    finally:
        await lengths.close()
        if args.redis_url:
            client = aioredis.from_url(args.redis_url)
            await client.delete(*(lengths.key(service_type) for service_type in ServiceType))
            await client.aclose()
    elapsed = time.perf_counter() - started
    by_type: dict[str, Any] = {}
    for service_type in ServiceType:
        by_type[service_type.value] = {
            "true_median_tokens": statistics.median(truths[service_type]),
            "estimator": summary(estimation_error(estimates[service_type], truths[service_type])),
            "prior": summary(estimation_error(PRIOR_TOKENS, truths[service_type])),
            "oracle_median": summary(estimation_error(oracle[service_type], truths[service_type])),
        }
    every_estimate = [value for service_type in ServiceType for value in estimates[service_type]]
    every_truth = [value for service_type in ServiceType for value in truths[service_type]]
    every_oracle = [value for service_type in ServiceType for value in oracle[service_type]]
    return {
        "by_service_type": by_type,
        "all": {
            "estimator": summary(estimation_error(every_estimate, every_truth)),
            "prior": summary(estimation_error(PRIOR_TOKENS, every_truth)),
            "oracle_median": summary(estimation_error(every_oracle, every_truth)),
        },
        "estimate_and_observe_us_per_request": round(elapsed / len(order) * 1e6, 1),
    }


HEADER = (
    "service type",
    "true median",
    "MAE est.",
    "MAE prior",
    "rel. err est.",
    "rel. err prior",
    "bin acc. est.",
    "bin acc. prior",
    "bin acc. oracle",
)


def print_table(name: str, result: dict[str, Any]) -> None:
    print(f"\n### {name}\n")
    print("| " + " | ".join(HEADER) + " |")
    print("|---|" + "---:|" * (len(HEADER) - 1))
    rows: dict[str, Any] = {**result["by_service_type"], "all": {"true_median_tokens": "", **result["all"]}}
    for service_type, row in rows.items():
        estimator, prior = row["estimator"], row["prior"]
        cells = [
            service_type,
            str(row["true_median_tokens"]),
            f"{estimator['mae_tokens']:.0f}",
            f"{prior['mae_tokens']:.0f}",
            f"{estimator['mean_relative_error']:.2f}",
            f"{prior['mean_relative_error']:.2f}",
            f"{estimator['bin_accuracy']:.1%}",
            f"{prior['bin_accuracy']:.1%}",
            f"{row['oracle_median']['bin_accuracy']:.1%}",
        ]
        print("| " + " | ".join(cells) + " |")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    order = [service_type for service_type in ServiceType for _ in range(args.requests_per_type)]
    rng.shuffle(order)
    results = {}
    for name, (draw, median) in scenarios(rng, args.sigma, args.requests_per_type).items():
        results[name] = await run_scenario(draw, median, order, args)
        print_table(name, results[name])
    return {
        "command": shlex.join(["python", *sys.argv]),
        "store": "redis" if args.redis_url else "in-process",
        "statistic": f"median of the last {args.window} observed lengths per service type "
        f"(prior below {MIN_OBSERVATIONS} observations)",
        "prior_tokens": PRIOR_TOKENS,
        "requests_per_type": args.requests_per_type,
        "seed": args.seed,
        "lognormal_sigma": args.sigma,
        "drift_factor": DRIFT_FACTOR,
        "corpus_lengths_tokens": {key.value: sorted(value) for key, value in corpus_lengths().items()},
        "scenarios": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests-per-type", type=int, default=1000)
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    parser.add_argument("--sigma", type=float, default=DEFAULT_SIGMA, help="lognormal sigma of the synthetic scenarios")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--redis-url", default=None, help="run the estimator on this Redis instead of in-process")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
