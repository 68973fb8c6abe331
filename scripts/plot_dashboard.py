"""Render the Grafana dashboard's panels from real Prometheus data into one PNG (Grafana itself cannot run here).

    .venv/bin/python scripts/plot_dashboard.py --duration 180 --out docs/dashboard/dashboard.png

By default it starts the whole loop on the loopback, on free ports: Redis, the llama-3-8b-edge and gpt-4o
simulators, the decision service, the gateway and the channel emulator (UMa cell), as tests/conftest.py's
``start_live_stack`` does; then a real Prometheus (``apt-get install prometheus``; ``--prometheus-binary``)
with a temporary config that scrapes the five services every ``--scrape-interval``. It sends bounded traffic
through the air interface with the openai client (``--duration`` seconds and at most ``--max-requests``
requests, from ``--users`` users, ``--concurrency`` at a time, the workers starting one after another over
the first half so that the load ramps up), lets Prometheus scrape once more, runs every panel target's
``expr`` through ``/api/v1/query_range`` over the run (``$__rate_interval`` becomes ``--rate-window``) and
draws one subplot per panel, as Grafana would: legends from ``legendFormat``, the panel's unit, stacking and
right-axis overrides. Everything it started is stopped at the end; logs stay in ``--state-dir``.

Against a running Prometheus instead (for example the compose stack's):

    .venv/bin/python scripts/plot_dashboard.py --prometheus-url http://127.0.0.1:9090 \
        --air-url http://127.0.0.1:8080 --duration 120

sends the traffic to ``--air-url`` (loopback only) and plots the run; with ``--no-traffic`` it plots the last
``--duration`` seconds as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
from matplotlib.figure import Figure

from edgecloud.testbed.cli import redis_server_binary
from edgecloud.testbed.processes import ManagedProcess, free_port, http_ok, tcp_open

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DASHBOARD = ROOT / "deploy/grafana/dashboards/edgecloud-testbed.json"
DEFAULT_OUT = ROOT / "docs/dashboard/dashboard.png"
EDGE_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"  # as tests/conftest.py's live stack
CLOUD_MODEL = "gpt-4o"
AUTO_MODEL = "edgecloud-auto"
STARTUP_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 60.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# (service type, prompt): one per service type, so the classifier and the reward panels see every class.
PROMPTS = (
    ("chat", "Hi! How are you doing today? Tell me something nice."),
    ("translation", "Translate into German: 'The train leaves at eight and arrives at noon.'"),
    ("summarization", "Summarize in two sentences: the meeting covered the budget, hiring and the new office."),
    ("information_extraction", "Extract every date and person from: 'Ana met Bo on 3 May and Cy on 9 June.'"),
    ("science_reasoning", "Why does ice float on water? Explain with density and hydrogen bonds."),
    ("math", "Solve for x: 3x + 7 = 22. Show the steps."),
    ("coding", "Write a Python function that returns the n-th Fibonacci number iteratively."),
)
ROUTES = (("edge", 0.2), ("cloud", 0.2), (None, 0.6))  # x-route header (None: edgecloud-auto) and its share
STREAM_SHARE = 0.8
STATED_TYPE_SHARE = 0.5  # requests that state x-service-type; the others go through the classifier
MAX_TOKENS = (16, 64)
THINK_S = 0.5  # mean pause of a user between two requests (exponential)
UNITS = {  # Grafana unit -> (scale, axis label)
    "s": (1.0, "s"),
    "percentunit": (100.0, "%"),
    "bps": (1e-6, "Mbit/s"),
    "reqps": (1.0, "req/s"),
    "none": (1.0, ""),
}
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")  # fmt: skip
LINE_STYLES = ("-", "--", ":", "-.")
COLUMNS = 3
PANEL_SIZE_IN = (6.4, 3.6)
DPI = 100


# ---- the stack and Prometheus ----


@dataclass
class Stack:
    ports: dict[str, int]
    processes: list[ManagedProcess] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self) -> None:
        for process in self.processes:
            print(f"[plot] starting {process.name} (log: {process.log_path})", flush=True)
            process.start()
            process.wait_healthy()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def service(name: str, module: str, port: int, logs: Path, env: dict[str, str]) -> ManagedProcess:
    return ManagedProcess(
        name,
        [sys.executable, "-m", module],
        logs / f"{name}.log",
        http_ok(f"http://127.0.0.1:{port}/health"),
        env=env,
        startup_timeout_s=STARTUP_TIMEOUT_S,
    )


def plan_stack(state: Path, channel_model: str, gateway_env: dict[str, str]) -> Stack:
    """Redis, two simulators, decision service, gateway, channel emulator: tests/conftest.py's live stack."""
    ports = {name: free_port() for name in ("redis", "edge", "cloud", "decision", "gateway", "air")}
    stack = Stack(ports)
    logs, redis_url = state / "logs", f"redis://127.0.0.1:{ports['redis']}/0"
    (state / "redis").mkdir(parents=True, exist_ok=True)
    redis = ManagedProcess(
        "redis",
        [redis_server_binary(), "--port", str(ports["redis"]), "--bind", "127.0.0.1",
         "--dir", str((state / "redis").resolve()), "--appendonly", "yes", "--save", ""],
        logs / "redis.log",
        tcp_open(ports["redis"]),
    )  # fmt: skip
    edge_url, cloud_url = f"{stack.url('edge')}/v1", f"{stack.url('cloud')}/v1"
    stack.processes = [
        redis,
        service("edge-llm", "edgecloud.llmsim", ports["edge"], logs,
                {"LLMSIM_PORT": str(ports["edge"]), "LLMSIM_PROFILE": "llama-3-8b-edge", "LLMSIM_MODEL": EDGE_MODEL}),
        service("cloud-llm", "edgecloud.llmsim", ports["cloud"], logs,
                {"LLMSIM_PORT": str(ports["cloud"]), "LLMSIM_PROFILE": "gpt-4o-cloud", "LLMSIM_MODEL": CLOUD_MODEL}),
        service("decision", "edgecloud.decision", ports["decision"], logs,
                {"DECISION_PORT": str(ports["decision"]), "DECISION_REDIS_URL": redis_url,
                 "DECISION_LLM_URL": edge_url, "DECISION_LLM_MODEL": EDGE_MODEL}),
        service("gateway", "edgecloud.gateway", ports["gateway"], logs,
                {"GATEWAY_PORT": str(ports["gateway"]), "GATEWAY_EDGE_URL": edge_url, "GATEWAY_EDGE_MODEL": EDGE_MODEL,
                 "GATEWAY_EDGE_MAX_MODEL_LEN": "8192", "GATEWAY_CLOUD_URL": cloud_url,
                 "GATEWAY_CLOUD_MODEL": CLOUD_MODEL, "GATEWAY_DECISION_URL": stack.url("decision"),
                 "GATEWAY_LENGTHS_REDIS_URL": redis_url, **gateway_env}),
        service("channel-emulator", "edgecloud.channel", ports["air"], logs,
                {"CHANNEL_PORT": str(ports["air"]), "CHANNEL_UPSTREAM_URL": stack.url("gateway"),
                 "CHANNEL_CHANNEL_MODEL": channel_model}),
    ]  # fmt: skip
    return stack


def prometheus_config(targets: dict[str, str], scrape_interval_s: int) -> str:
    """A scrape config like deploy/prometheus/prometheus.local.yml, for the given host:port per job."""
    lines = ["global:", f"  scrape_interval: {scrape_interval_s}s", f"  evaluation_interval: {scrape_interval_s}s"]
    lines.append("scrape_configs:")
    for job, target in targets.items():
        lines += [f"  - job_name: {job}", "    static_configs:", f'      - targets: ["{target}"]']
    return "\n".join(lines) + "\n"


def plan_prometheus(
    binary: str, state: Path, targets: dict[str, str], scrape_interval_s: int
) -> tuple[ManagedProcess, str]:
    """Prometheus on a free loopback port with its TSDB in ``state``, and its URL."""
    port = free_port()
    config = state / "prometheus.yml"
    config.write_text(prometheus_config(targets, scrape_interval_s))
    process = ManagedProcess(
        "prometheus",
        [binary, f"--config.file={config}", f"--storage.tsdb.path={state / 'prometheus-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        state / "logs" / "prometheus.log",
        http_ok(f"http://127.0.0.1:{port}/-/ready"),
        startup_timeout_s=STARTUP_TIMEOUT_S,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


# ---- traffic ----


@dataclass
class TrafficStats:
    sent: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, limit: int) -> bool:
        with self.lock:
            if self.sent >= limit:
                return False
            self.sent += 1
            return True

    def fail(self) -> None:
        with self.lock:
            self.failed += 1


def one_request(client: Any, rng: random.Random, user: str) -> None:
    service_type, prompt = rng.choice(PROMPTS)
    route = rng.choices([r for r, _ in ROUTES], weights=[w for _, w in ROUTES])[0]
    headers = {"x-user-id": user}
    if route:
        headers["x-route"] = route
    if rng.random() < STATED_TYPE_SHARE:
        headers["x-service-type"] = service_type
    model = {"edge": EDGE_MODEL, "cloud": CLOUD_MODEL, None: AUTO_MODEL}[route]
    options = {"model": model, "messages": [{"role": "user", "content": prompt}],
               "max_tokens": rng.randint(*MAX_TOKENS), "extra_headers": headers}  # fmt: skip
    if rng.random() < STREAM_SHARE:
        for _ in client.chat.completions.create(stream=True, **options):
            pass
    else:
        client.chat.completions.create(**options)


def run_traffic(air_url: str, duration_s: float, max_requests: int, users: int, concurrency: int, seed: int) -> None:
    """``concurrency`` workers, started one after another over the first half, until the time or count is up."""
    from openai import OpenAI

    host = urlparse(air_url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"traffic goes to the loopback only, not {host!r}")
    stats = TrafficStats()
    deadline = time.monotonic() + duration_s
    stagger = duration_s / 2 / max(concurrency, 1)

    def worker(index: int) -> None:
        rng = random.Random(seed + index)
        client = OpenAI(base_url=f"{air_url}/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S, max_retries=0)
        time.sleep(index * stagger)
        while time.monotonic() < deadline and stats.take(max_requests):
            try:
                one_request(client, rng, f"user-{rng.randrange(users)}")
            except Exception as error:  # a failed request is data for the dashboard, not a reason to stop
                stats.fail()
                print(f"[plot] request failed: {type(error).__name__}: {error}"[:200], flush=True)
            time.sleep(min(rng.expovariate(1 / THINK_S), max(0.0, deadline - time.monotonic())))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(5.0)
        print(f"[plot] traffic: {stats.sent} requests sent, {stats.failed} failed", flush=True)
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S)


# ---- queries and the figure ----


@dataclass
class Series:
    label: str
    ref_id: str
    labels: tuple[str, ...]  # the series' label values, which pick its colour (a route, a service type)
    times: np.ndarray
    values: np.ndarray


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel
        yield from (inner for inner in panel.get("panels", []) if inner["type"] != "row")


def grafana_to_promql(expr: str, rate_window: str, step: str) -> str:
    """Grafana's interval variables, which Prometheus does not know, replaced by fixed durations."""
    expr = re.sub(r"\$\{?__rate_interval\}?", rate_window, expr)
    return re.sub(r"\$\{?__interval\}?", step, expr)


def legend(template: str, labels: dict[str, str]) -> str:
    if not template:
        return json.dumps(labels) if labels else "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def query_range(client: httpx.Client, prometheus: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    response = client.get(
        f"{prometheus}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step}
    )
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}\n{body.get('error', response.text)}")
    return body["data"]["result"]


def fetch(
    prometheus: str, dashboard: dict[str, Any], start: float, end: float, step: float, rate_window: str
) -> list[tuple[dict[str, Any], list[Series]]]:
    out = []
    with httpx.Client(timeout=30.0) as client:
        for panel in panels(dashboard):
            series = []
            for target in panel["targets"]:
                expr = grafana_to_promql(target["expr"], rate_window, f"{step:g}s")
                for result in query_range(client, prometheus, expr, start, end, step):
                    points = np.array([(float(t), float(v)) for t, v in result["values"]], dtype=float)
                    labels = tuple(v for k, v in sorted(result["metric"].items()) if k != "__name__")
                    text = legend(target.get("legendFormat", ""), result["metric"])
                    series.append(Series(text, target["refId"], labels, points[:, 0] - start, points[:, 1]))
            out.append((panel, series))
    return out


def right_axis_refs(panel: dict[str, Any]) -> set[str]:
    refs = set()
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        placement = {p["id"]: p.get("value") for p in override.get("properties", [])}.get("custom.axisPlacement")
        if matcher.get("id") == "byFrameRefID" and placement == "right":
            refs.add(matcher["options"])
    return refs


def draw_panel(axes: Any, panel: dict[str, Any], series: Sequence[Series], duration_s: float) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    scale, unit = UNITS.get(defaults.get("unit", "none"), (1.0, defaults.get("unit", "")))
    seconds = unit == "s" and all(np.nanmax(s.values, initial=0) < 1 for s in series)
    if seconds:
        scale, unit = 1000.0, "ms"
    axes.set_title(panel["title"], fontsize=8.5)
    axes.set_xlim(0, duration_s / 60)
    axes.set_xlabel("minutes", fontsize=7)
    axes.set_ylabel(unit, fontsize=7)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    if not any(np.isfinite(s.values).any() for s in series):
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes, color="grey")
        return
    right = right_axis_refs(panel)
    twin = axes.twinx() if any(s.ref_id in right for s in series) else None
    if twin is not None:
        twin.tick_params(labelsize=7)
    left_series = [s for s in series if s.ref_id not in right]
    # Grafana colours every series apart; here a colour per label set (route, service type...) and a line style
    # per query, so that "delivered p95 edge" and "gateway p95 edge" share a colour and differ in style.
    colours = {key: COLOURS[i % len(COLOURS)] for i, key in enumerate(dict.fromkeys(s.labels for s in series))}
    refs = {ref: LINE_STYLES[i % len(LINE_STYLES)] for i, ref in enumerate(dict.fromkeys(s.ref_id for s in series))}
    if defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal" and left_series:
        grid = np.unique(np.concatenate([s.times for s in left_series]))
        stacked = [np.nan_to_num(np.interp(grid, s.times, s.values, left=0, right=0)) * scale for s in left_series]
        axes.stackplot(grid / 60, *stacked, labels=[s.label for s in left_series], alpha=0.7,
                       colors=[colours[s.labels] for s in left_series])  # fmt: skip
    else:
        for s in left_series:
            axes.plot(s.times / 60, s.values * scale, label=s.label, linewidth=1.2, color=colours[s.labels],
                      linestyle=refs[s.ref_id])  # fmt: skip
    for s in series:
        if s.ref_id in right and twin is not None:
            twin.plot(s.times / 60, s.values, label=f"{s.label} (right)", linewidth=1.2, color=colours[s.labels],
                      linestyle=refs[s.ref_id])  # fmt: skip
    if "min" in defaults:
        axes.set_ylim(bottom=defaults["min"] * scale)
    if "max" in defaults:
        axes.set_ylim(top=defaults["max"] * scale * 1.02)
    handles, labels = axes.get_legend_handles_labels()
    if twin is not None:
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    axes.legend(handles, labels, fontsize=5.5, ncol=2 if len(labels) > 6 else 1, loc="upper left", framealpha=0.6)


def draw(data: list[tuple[dict[str, Any], list[Series]]], title: str, duration_s: float, out: Path) -> None:
    rows = math.ceil(len(data) / COLUMNS)
    figure = Figure(figsize=(PANEL_SIZE_IN[0] * COLUMNS, PANEL_SIZE_IN[1] * rows + 0.6), layout="constrained")
    figure.suptitle(title, fontsize=12)
    grid = figure.subplots(rows, COLUMNS, squeeze=False)
    for axes, (panel, series) in zip(grid.flat, data, strict=False):
        draw_panel(axes, panel, series, duration_s)
    for axes in list(grid.flat)[len(data) :]:
        axes.set_visible(False)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=DPI)


# ---- main ----


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD, help="Grafana dashboard JSON")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of traffic (and of the plot)")
    parser.add_argument("--max-requests", type=int, default=2000, help="stop the traffic after this many requests")
    parser.add_argument("--concurrency", type=int, default=6, help="requests in flight at most")
    parser.add_argument("--users", type=int, default=8, help="distinct users (x-user-id) attached to the cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scrape-interval", type=int, default=5, help="seconds; also the query step")
    parser.add_argument("--rate-window", default="30s", help="what $__rate_interval becomes")
    parser.add_argument("--channel-model", default="uma", help="channel emulator's CHANNEL_CHANNEL_MODEL")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE", help="extra GATEWAY_*")
    parser.add_argument("--prometheus-binary", default="prometheus", help="Prometheus server to start")
    parser.add_argument("--prometheus-url", help="use this running Prometheus instead of starting the stack")
    parser.add_argument("--air-url", default="http://127.0.0.1:8080", help="with --prometheus-url: users' base URL")
    parser.add_argument("--no-traffic", action="store_true", help="with --prometheus-url: plot the last --duration s")
    parser.add_argument("--state-dir", type=Path, help="logs, configs and TSDB (default: a temporary folder)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_traffic and not args.prometheus_url:
        raise SystemExit("--no-traffic plots what a running Prometheus holds: give --prometheus-url too")
    dashboard = json.loads(args.dashboard.read_text())
    step = float(args.scrape_interval)
    with contextlib.ExitStack() as cleanup:
        if args.prometheus_url:
            prometheus, air_url = args.prometheus_url.rstrip("/"), args.air_url.rstrip("/")
        else:
            binary = shutil.which(args.prometheus_binary)
            if binary is None:
                raise SystemExit(f"{args.prometheus_binary!r} not found: apt-get install prometheus, or pass "
                                 "--prometheus-url of a running one")  # fmt: skip
            state = args.state_dir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="dashboard-")))
            gateway_env = dict(item.split("=", 1) for item in args.gateway_env)
            stack = plan_stack(state, args.channel_model, gateway_env)
            cleanup.callback(stack.stop)
            stack.start()
            targets = {
                "channel-emulator": "air", "gateway": "gateway", "decision": "decision", "edge-llm": "edge",
                "cloud-llm": "cloud",
            }  # fmt: skip
            server, prometheus = plan_prometheus(
                binary, state, {job: f"127.0.0.1:{stack.ports[name]}" for job, name in targets.items()},
                args.scrape_interval,
            )  # fmt: skip
            cleanup.callback(server.stop)
            server.start()
            server.wait_healthy()
            air_url = stack.url("air")
            time.sleep(2 * step)  # a couple of scrapes before the traffic, so rates start from zero
        if args.no_traffic:
            end = time.time()
            start = end - args.duration
        else:
            start = time.time()
            run_traffic(air_url, args.duration, args.max_requests, args.users, args.concurrency, args.seed)
            time.sleep(2 * step)  # the last answers' experiences land and get scraped
            end = time.time()
        data = fetch(prometheus, dashboard, start, end, step, args.rate_window)
    source = "simulators behind the full loop" if not args.prometheus_url else prometheus
    title = f"{dashboard['title']}: {(end - start) / 60:.1f} min from Prometheus ({source})"
    draw(data, title, end - start, args.out)
    print(f"[plot] wrote {args.out} ({len(data)} panels)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
