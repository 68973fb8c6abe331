"""Every Grafana dashboard under deploy/grafana/dashboards queries only metrics the running services export.

The check is live: the session's ``live_stack`` (Redis, the llama-3-8b-edge and gpt-4o simulators, the
decision service, the gateway and the channel emulator on a constant channel) serves a few short chat
requests through the air interface with the official ``openai`` client, streamed and not, on both routes
and through ``edgecloud-auto``; then every service's ``/metrics`` is scraped and each metric name that a
panel's PromQL uses must be one of them.

What "exported" means: prometheus_client declares every family on ``/metrics`` (``# HELP``/``# TYPE``) as
soon as the metric object exists, labelled or not, but a labelled family has samples only once a child with
labels exists, that is after the event it counts. So ``edgecloud_gateway_retries_total`` (no retry yet) or
``edgecloud_gateway_backend_down`` (no backend failed) appear in this run as a ``# TYPE`` line without any
sample. A family without samples therefore counts with the sample names its type gives (a histogram ``x``:
``x_bucket``, ``x_sum``, ``x_count``; a counter: ``x_total``), which checks the names without provoking every
event; a family with samples counts with exactly the samples present, because they can differ from its
type's (prometheus_client writes no ``_sum`` for a histogram whose buckets go below zero, like the reward's).

``metric_names`` pulls the metric names out of a PromQL expression; its unit tests below run without the
stack.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
DATASOURCE_UID = "prometheus"  # deploy/grafana/provisioning/datasources/prometheus.yml

# PromQL functions, aggregation operators and keywords (Prometheus 3.x). An identifier followed by "(" is a
# function call whatever its name; these sets also keep the keywords, and any function name, out of the metrics.
PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time",
    "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "deg", "delta", "deriv", "double_exponential_smoothing", "exp",
    "floor", "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info", "irate",
    "label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time",
    "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time", "quantile_over_time", "rad",
    "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time",
    "timestamp", "vector", "year",
}  # fmt: skip
PROMQL_AGGREGATIONS = {
    "avg", "bottomk", "count", "count_values", "group", "limitk", "limit_ratio", "max", "min", "quantile",
    "stddev", "stdvar", "sum", "topk",
}  # fmt: skip
PROMQL_KEYWORDS = {
    "and", "or", "unless", "atan2", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "inf", "nan",
}  # fmt: skip
NOT_METRICS = PROMQL_FUNCTIONS | PROMQL_AGGREGATIONS | PROMQL_KEYWORDS

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
COMMENT = re.compile(r"#[^\n]*")
# Grafana variables: $name, ${name...}, [[name]] (the latter also dropped with the ranges below).
VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
MATCHERS = re.compile(r"\{([^{}]*)\}")
NAME_MATCHER = re.compile(r"__name__\s*=\s*(\"[^\"]*\"|'[^']*')")
RANGE = re.compile(r"\[[^\[\]]*\]")
# by (...), without (...), on (...), ignoring (...), group_left (...), group_right (...): label lists.
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
# A number (with a duration unit, as after offset) is consumed before an identifier, so 1e3 yields no "e3".
TOKEN = re.compile(
    r"(?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])*)"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<call>\s*\()?"
)

# The sample names of a family, by its # TYPE; counters are handled apart, any other type is its own name.
SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
}
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)\s*$")
SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)")


def metric_names(expr: str) -> set[str]:
    """The metric (sample) names a PromQL expression reads: ``x_bucket`` stays ``x_bucket``.

    A ``__name__="..."`` matcher names a metric. Then strings, comments, Grafana variables, selectors'
    ``{...}``, range and subquery brackets, and the label lists of by/without/on/ignoring/group_left/
    group_right are dropped. Of the identifiers left, a name followed by ``(`` is a function or an
    aggregation, the PromQL keywords are not metrics, and numbers (``0.95``, ``1e3``, ``5m``) are skipped.
    """
    names = {value[1:-1] for value in NAME_MATCHER.findall(expr)}
    text = STRING.sub('""', expr)
    text = COMMENT.sub(" ", text)
    text = VARIABLE.sub(" ", text)
    text = MATCHERS.sub(" ", text)
    while RANGE.search(text):
        text = RANGE.sub(" ", text)
    text = GROUPING.sub(" ", text)
    for token in TOKEN.finditer(text):
        name = token.group("name")
        if name is None or token.group("call") or name.lower() in NOT_METRICS:
            continue
        names.add(name)
    return names


def family_names(family: str, kind: str) -> set[str]:
    """The sample names a family of this ``# TYPE`` can have."""
    if kind == "counter":
        # prometheus_client writes a counter's family as x_total; OpenMetrics writes x.
        return {family if family.endswith("_total") else family + "_total"}
    return {family + suffix for suffix in SUFFIXES.get(kind, ("",))}


def exported_names(exposition: str) -> set[str]:
    """The sample names one ``/metrics`` page carries, or would once its empty families get a labelled child.

    A family with samples exports exactly those: prometheus_client leaves out a histogram's ``_sum`` when
    its lowest bucket is below zero, so a query of that ``_sum`` must fail here. A family declared by its
    ``# TYPE`` line without any sample yet counts with every name its type can have.
    """
    families: dict[str, tuple[str, set[str]]] = {}
    samples: set[str] = set()
    current = None
    for line in exposition.splitlines():
        if type_line := TYPE_LINE.match(line):
            current, kind = type_line.groups()
            families[current] = (kind, set())
        elif sample := SAMPLE_LINE.match(line):
            samples.add(sample.group(1))
            if current is not None:
                families[current][1].add(sample.group(1))
    for family, (kind, present) in families.items():
        if not present:
            samples |= family_names(family, kind)
    return samples


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) for every target of every non-row panel."""
    for panel in dashboard_panels(dashboard):
        if panel["type"] != "row":
            for target in panel.get("targets", []):
                yield panel["title"], target.get("expr", "")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# ---- the extractor, on hand-written expressions ----


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        (
            "histogram_quantile(0.95, sum by (route, le) (rate(edgecloud_gateway_time_to_first_token_seconds_bucket"
            "[$__rate_interval])))",
            {"edgecloud_gateway_time_to_first_token_seconds_bucket"},
        ),
        (
            'sum(rate(x_total{route="cloud", service_type=~"math|coding"}[5m])) by (service_type)'
            " / ignoring(route) group_left(model) sum without (le, outcome) (rate(y_total[1m:30s]))",
            {"x_total", "y_total"},
        ),
        (
            "sum by (model_name) (vllm:num_requests_running) + on() vllm:num_requests_waiting",
            {"vllm:num_requests_running", "vllm:num_requests_waiting"},
        ),
        ("rate(r_sum[5m] offset 1h) / rate(r_count[5m] @ end())", {"r_sum", "r_count"}),
        ("(sum(rate(a_total[1m])) or vector(0)) > bool 1e3 and 0.5 < 0x1F", {"a_total"}),
        ('{__name__="g", job="gateway"} * Inf - NaN', {"g"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)") unless max by (route) (n)', {"m", "n"}),
        ('topk(3, sum by (le) (rate(b_bucket{le!="+Inf"}[${__interval}])))  # by (le) comment', {"b_bucket"}),
        ("count(c) by (route) * avg_over_time(d[10m:1m]) - quantile(0.9, e)", {"c", "d", "e"}),
        ("sum by(le)(rate(f_bucket[$__rate_interval]))", {"f_bucket"}),
    ],
)
def test_metric_names(expr, expected):
    assert metric_names(expr) == expected


def test_exported_names_expand_empty_families_and_keep_samples():
    exposition = "\n".join([
        "# HELP h_seconds x", "# TYPE h_seconds histogram",
        "# HELP c_total y", "# TYPE c_total counter",
        "# HELP legacy z", "# TYPE legacy counter",
        "# HELP g w", "# TYPE g gauge", "g 1.0",
        "# HELP vllm:num_requests_running v", "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{model_name="m"} 0.0',
    ])  # fmt: skip
    assert exported_names(exposition) == {
        "h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "c_total", "legacy_total", "g",
        "vllm:num_requests_running",
    }  # fmt: skip


def test_exported_names_of_a_real_registry():
    """Labelled families without a child are declared only; a histogram reaching below zero has no _sum."""
    registry = CollectorRegistry()
    Counter("retries", "r", ["from_route"], registry=registry)
    Histogram("latency_seconds", "l", ["route"], registry=registry)
    Histogram("reward", "w", ["route"], buckets=(-10, 0, 10), registry=registry).labels("edge").observe(3)
    Gauge("queue", "q", registry=registry)
    names = exported_names(generate_latest(registry).decode())
    assert {"retries_total", "latency_seconds_bucket", "latency_seconds_sum", "latency_seconds_count"} <= names
    assert {"reward_bucket", "reward_count", "queue"} <= names
    assert "reward_sum" not in names


# ---- the dashboards' structure ----


def test_dashboards_exist():
    assert DASHBOARDS, "no dashboard JSON under deploy/grafana/dashboards"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_panels_have_queries_and_the_provisioned_datasource(path):
    dashboard = load(path)
    assert dashboard["uid"] and dashboard["title"]
    panels = list(dashboard_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    for panel in panels:
        if panel["type"] == "row":
            continue
        title = f"{path.name}: {panel['title']}"
        assert panel["datasource"]["uid"] == DATASOURCE_UID, title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{title}: empty expr"
            assert target.get("datasource", {}).get("uid", panel["datasource"]["uid"]) == DATASOURCE_UID, title
            assert metric_names(target["expr"]), f"{title}: no metric in {target['expr']!r}"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: duplicate refIds"


# ---- the dashboards against the running services ----

TRAFFIC = (  # (route header or None for the model's own choice, model, stream)
    ("edge", "meta-llama/Meta-Llama-3-8B-Instruct", True),
    ("edge", "meta-llama/Meta-Llama-3-8B-Instruct", False),
    ("cloud", "gpt-4o", True),
    ("cloud", "gpt-4o", False),
    (None, "edgecloud-auto", True),
    (None, "edgecloud-auto", False),
    (None, "edgecloud-auto", True),
)
PROMPTS = ("Say hello in five words.", "What is 17 * 23?", "Translate 'good morning' into French.")
EXPERIENCE_WAIT_S = 2.0


def send_traffic(base_url: str) -> None:
    """A few short chat requests through the air interface, streamed and not, on both routes and automatic."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=60.0, max_retries=0)
    for i, (route, model, stream) in enumerate(TRAFFIC):
        headers = {"x-route": route} if route else {}
        messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model=model, messages=messages, max_tokens=8, stream=True, extra_headers=headers
                )
            )
            assert chunks, (route, model)
        else:
            answer = client.chat.completions.create(model=model, messages=messages, max_tokens=8, extra_headers=headers)
            assert answer.choices, (route, model)


@pytest.fixture(scope="module")
def exported(live_stack) -> dict[str, set[str]]:
    """Service -> the sample names its /metrics can carry, after some traffic and its experiences."""
    send_traffic(live_stack.air_url)
    time.sleep(EXPERIENCE_WAIT_S)
    urls = {
        "channel-emulator": live_stack.air_url,
        "gateway": live_stack.gateway_url,
        "decision": live_stack.decision_url,
        "edge-llm": live_stack.edge_url.removesuffix("/v1"),
        "cloud-llm": live_stack.cloud_url.removesuffix("/v1"),
    }
    out = {}
    with httpx.Client(timeout=10.0) as client:
        for service, url in urls.items():
            response = client.get(f"{url}/metrics")
            response.raise_for_status()
            out[service] = exported_names(response.text)
    return out


def test_traffic_reached_every_layer(exported):
    """The traffic was seen by the channel emulator, the gateway, the decision service and both simulators."""
    assert "edgecloud_channel_delivered_time_to_first_token_seconds_bucket" in exported["channel-emulator"]
    assert "edgecloud_gateway_requests_total" in exported["gateway"]
    assert "edgecloud_decision_decisions_total" in exported["decision"]
    for backend in ("edge-llm", "cloud-llm"):
        assert "vllm:time_to_first_token_seconds_bucket" in exported[backend]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_metrics_are_exported_by_the_running_services(exported, path):
    every = set().union(*exported.values())
    missing = {}
    for title, expr in queries(load(path)):
        for name in sorted(metric_names(expr) - every):
            missing.setdefault(name, []).append(title)
    assert not missing, f"{path.name} queries metrics no service exports: {json.dumps(missing, indent=1)}"
