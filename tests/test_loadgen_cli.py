"""``python -m edgecloud.loadgen`` as a user runs it: bad arguments, exported prompts, a whole run's files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, start_simulator
from edgecloud.loadgen.report import CSV_COLUMNS
from edgecloud.testbed.processes import free_port

PROFILE = "llama-3-8b-edge"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def loadgen(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgecloud.loadgen", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--request-rate", "-2"], "--request-rate: every rate must be a positive number"),
        (["--request-rate", "0"], "--request-rate: every rate must be a positive number"),
        (["--request-rate", "1,x"], "--request-rate: not a number"),
        (["--arrival", "gamma", "--burstiness", "0"], "--burstiness: Input should be greater than 0"),
        (["--arrival", "gamma", "--burstiness", "-1"], "--burstiness: Input should be greater than 0"),
        (["--burstiness", "0.5"], "--burstiness needs --arrival gamma"),
        (["--arrival", "uniform"], "argument --arrival: invalid choice: 'uniform'"),
        (["--service-types", "chat,poetry"], "unknown service type 'poetry'"),
        (["--quality-share", "1.5"], "--quality-share: Input should be less than or equal to 1"),
        (["--quality-share", "-0.1"], "--quality-share: Input should be greater than or equal to 0"),
        (["--quality-share", "0.5", "--service-types", "chat"], "no quality-preferred type"),
        (["--num-requests", "0"], "unbounded run refused"),
        (["--base-url", "http://example.com/v1"], "not a loopback address: pass --allow-remote"),
        (["--base-url", "http://192.168.1.10:8000/v1"], "not a loopback address: pass --allow-remote"),
        (["--concurrency", "2", "--request-rate", "1"], "give one"),
        (["--goodput", "ttft:fast"], "--goodput: 'ttft:fast': the SLO must be a number"),
        (["--max-tokens", "8", "--output-tokens-mean", "8"], "not both"),
    ],
)
def test_bad_arguments_get_one_clear_line_and_exit_2(args, message):
    done = loadgen(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unreachable_target_exits_1_before_sending():
    port = free_port()  # nothing listens there
    done = loadgen("--base-url", f"http://127.0.0.1:{port}/v1", "--no-progress")
    assert done.returncode == 1
    assert f"target unreachable: cannot connect to http://127.0.0.1:{port}/v1/models" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_exported_prompts_are_the_seeded_requests(tmp_path: Path):
    first, again = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (first, again):
        done = loadgen("--export-prompts", str(path), "--num-requests", "25", "--seed", "9")
        assert done.returncode == 0, done.stderr
    assert first.read_text() == again.read_text()
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(rows) == 25
    assert all(row["prompt"] and row["output_tokens"] == row["output_tokens_count"] >= 1 for row in rows)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory):
    server, url = start_simulator(tmp_path_factory.mktemp("loadgen-cli"), PROFILE, jitter="0", log_level="warning")
    try:
        yield url
    finally:
        server.stop()


def test_a_sweep_against_the_simulator_writes_report_csv_and_plots(simulator: str, tmp_path: Path):
    out = tmp_path / "run"
    done = loadgen("--base-url", simulator, "--model", PROFILE, "--request-rate", "10,20", "--num-requests", "12",
                   "--max-tokens", "8", "--seed", "3", "--goodput", "ttft:2000", "tpot:200", "e2e:5000",
                   "--api-key", "sekret-key", "--output-dir", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "rate-10" in done.stdout and "rate-20" in done.stdout and "TTFT ms mean/p99" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["seed"] == 3 and report["config"]["request_rate"] == [10.0, 20.0]
    assert report["config"]["api_key"] == "set"
    assert {"ttft", "tpot", "itl", "e2e", "goodput", "success_rate", "reward"} <= set(report["definitions"])
    assert report["corpus"]["coding"] == 164
    assert [point["label"] for point in report["points"]] == ["rate-10", "rate-20"]
    for point in report["points"]:
        summary = point["summary"]
        assert (summary["requests"], summary["completed"], summary["failed"]) == (12, 12, 0)
        assert summary["output_tokens"] == {"total": 96, "mean": 8.0, "source": {"usage": 12}}
        assert summary["goodput"] == pytest.approx(summary["request_throughput"])  # generous SLOs: all meet
        assert summary["ttft_ms"]["count"] == 12 and summary["tpot_ms"]["p99"] is not None
        # The simulator sends no gateway headers: one "unknown" route, no success rate or reward.
        assert list(point["by_route"]) == ["unknown"]
        assert summary["success_rate"]["all"] is None and summary["reward"]["count"] == 0
        assert sum(part["requests"] for part in point["by_service_type"].values()) == 12
    with (out / "requests.csv").open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    assert len(rows) == 24 and {row["point"] for row in rows} == {"rate-10", "rate-20"}
    assert all(row["output_tokens"] == "8" and row["route"] == "unknown" and row["reward"] == "" for row in rows)
    assert all(float(row["sent_s"]) >= float(row["scheduled_s"]) for row in rows)
    for name in ("latency-rate-10", "timeline-rate-10", "latency-rate-20", "timeline-rate-20", "sweep"):
        assert (out / f"{name}.png").read_bytes().startswith(PNG_MAGIC), name
    # The key is sent, never shown.
    for text in (done.stdout, done.stderr, *(path.read_text() for path in out.glob("*.*") if path.suffix != ".png")):
        assert "sekret-key" not in text
