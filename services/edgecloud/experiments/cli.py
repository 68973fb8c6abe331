"""``python -m edgecloud.experiments``: the whole Fig. 5 reproduction in one command.

Starts the local vLLM edge when the decision LLM is the default local one and is not running, runs the
learning runs and the sweeps in virtual time, writes results.json, claims.md and the PNGs, and prints the
claims table and the wall time. Bad arguments and an unreachable LLM end with a message and exit 2 or 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

from edgecloud.core.reward import RewardParams
from edgecloud.experiments.analysis import Claim, episode_series, learning_claims, sweep_claims
from edgecloud.experiments.config import DEFAULT_CONFIG_FILE, ConfigError, ExperimentConfig, LlmOverrides
from edgecloud.experiments.figures import write_figures
from edgecloud.experiments.reproduce import (
    DecisionLlm,
    Experiment,
    SweepPoint,
    learning_runs,
    sweep_runs,
    uses_llm,
)
from edgecloud.experiments.runner import PolicyRun
from edgecloud.testbed.cli import LAUNCH_SCRIPT, edge_vllm_process
from edgecloud.testbed.processes import ManagedProcess, ProcessFailed, http_ok
from edgecloud.testbed.settings import TestbedSettings

LOCAL_LLM_LABEL = "SmolLM2-135M, local vLLM"
GPT4O_LABEL = "GPT-4o"
DEFAULT_HTTP_PORT = 80
EXIT_USAGE, EXIT_UNREACHABLE = 2, 1
QUIET_PROGRESS_EVERY = 25
"""Episodes between progress lines of the runs without an LLM (they are fast)."""


def log(message: str) -> None:
    print(f"[fig5] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edgecloud.experiments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    reproduce = commands.add_parser("reproduce", help="run every panel of Fig. 5 and write the results")
    reproduce.add_argument("--config", type=Path, default=DEFAULT_CONFIG_FILE, help="experiment file (YAML)")
    reproduce.add_argument("--output-dir", type=Path, default=Path("docs/reproduction"), help="where results go")
    reproduce.add_argument("--episodes", type=int, help="episodes of every learning run (default: the file's)")
    reproduce.add_argument("--sweep-tasks", type=int, help="tasks per sweep point (default: the file's)")
    reproduce.add_argument("--no-start", action="store_true", help="never start vLLM; fail if the LLM is not up")
    args = parser.parse_args(argv)
    for name in ("episodes", "sweep_tasks"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    return args


def configured(args: argparse.Namespace) -> ExperimentConfig:
    config = ExperimentConfig.load(args.config)
    learning = config.learning if args.episodes is None else config.learning.model_copy(
        update={"episodes": args.episodes}
    )  # fmt: skip
    sweeps = config.sweeps if args.sweep_tasks is None else config.sweeps.model_copy(
        update={"tasks_per_point": args.sweep_tasks}
    )  # fmt: skip
    return config.model_copy(update={"learning": learning, "sweeps": sweeps})


def decision_llms(config: ExperimentConfig, overrides: LlmOverrides) -> list[DecisionLlm]:
    local = DecisionLlm(
        LOCAL_LLM_LABEL, overrides.llm_url or config.decision.llm_url, overrides.llm_model or config.decision.llm_model
    )
    if overrides.openai_api_key is None:
        return [local]
    key = overrides.openai_api_key.get_secret_value()
    return [local, DecisionLlm(GPT4O_LABEL, overrides.openai_url, overrides.openai_model, key)]


def reachable(url: str) -> bool:
    return http_ok(f"{url.rstrip('/')}/models")()


def start_local_vllm(url: str) -> ManagedProcess:
    """The testbed's vLLM edge on the URL's loopback port, as ``scripts/testbed`` starts it."""
    testbed = TestbedSettings()
    port = urlsplit(url).port or DEFAULT_HTTP_PORT
    vllm = edge_vllm_process(testbed, port, testbed.state_dir / "logs" / "fig5-vllm.log")
    log(f"starting the local vLLM edge on port {port} (log: {vllm.log_path}); ~2 min to compile")
    vllm.start()
    took = vllm.wait_healthy()
    log(f"vLLM ready after {took:.0f} s")
    return vllm


def ensure_llm(llm: DecisionLlm, may_start: bool) -> ManagedProcess | None:
    if reachable(llm.url):
        return None
    host = urlsplit(llm.url).hostname
    if not may_start or host not in {"127.0.0.1", "localhost"} or not LAUNCH_SCRIPT.exists():
        raise ConnectionError(
            f"the decision LLM at {llm.url} does not answer GET /models; start it (edge-llm/cpu/launch.sh) "
            "or set EXPERIMENTS_LLM_URL to a running OpenAI-compatible endpoint"
        )
    return start_local_vllm(llm.url)


def claims_markdown(claims: list[Claim]) -> str:
    rows = ["| panel | the paper's claim | measured here | held |", "|---|---|---|---|"]
    rows += [f"| {claim.panel} | {claim.paper} | {claim.measured} | {claim.held} |" for claim in claims]
    return "\n".join(rows) + "\n"


def write_results(
    directory: Path,
    config: ExperimentConfig,
    runs: list[PolicyRun],
    points: list[SweepPoint],
    timings: dict[str, float],
) -> list[Claim]:
    params = RewardParams(config.decision.target_delay_s, config.decision.quality_penalty)
    series = [episode_series(run, params) for run in runs]
    claims = learning_claims(series) + sweep_claims(points)
    directory.mkdir(parents=True, exist_ok=True)
    results = {
        "config": config.model_dump(mode="json"),
        "wall_time_s": timings,
        "learning": [asdict(item) for item in series],
        "sweeps": [asdict(point) for point in points],
        "claims": [asdict(claim) for claim in claims],
    }
    (directory / "results.json").write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")
    (directory / "claims.md").write_text(claims_markdown(claims))
    write_figures(series, points, directory)
    return claims


def reproduce(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    config = configured(args)
    experiment = Experiment(config)
    llms = decision_llms(config, LlmOverrides())
    vllm = ensure_llm(llms[0], may_start=not args.no_start)
    timings = {"llm_start": time.perf_counter() - started}
    try:
        mark = time.perf_counter()

        def progress(run: PolicyRun) -> None:
            if not uses_llm(run.policy) and len(run.episodes) % QUIET_PROGRESS_EVERY:
                return
            log(f"{time.perf_counter() - started:6.0f} s  {run.label}: episode {len(run.episodes)}, "
                f"{run.llm_calls} LLM calls")  # fmt: skip

        runs = asyncio.run(learning_runs(experiment, llms, progress))
        timings["learning"] = time.perf_counter() - mark
    finally:
        if vllm is not None:
            vllm.stop()
    mark = time.perf_counter()
    points = asyncio.run(sweep_runs(experiment))
    timings["sweeps"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    claims = write_results(args.output_dir, config, runs, points, timings)
    print(claims_markdown(claims))
    log(f"results in {args.output_dir}/ (results.json, claims.md, fig5*.png); wall time {timings['total']:.0f} s")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        reproduce(args)
    except ConfigError as error:
        log(f"error: {error}")
        sys.exit(EXIT_USAGE)
    except (ConnectionError, ProcessFailed) as error:
        log(f"error: {error}")
        sys.exit(EXIT_UNREACHABLE)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(EXIT_UNREACHABLE)
