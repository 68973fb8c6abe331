"""LiteLLM's proxy as a child of a benchmark: a pinned version in its own virtual environment.

The venv (``.cache/bench/litellm-venv``) is created and ``litellm[proxy]`` installed on first use, the
command printed; later runs reuse it when it holds the pinned version. The proxy runs with LiteLLM's
default settings, one worker, a master key, no database and one model entry pointing at an
OpenAI-compatible backend; it is told to use the model cost map it ships instead of fetching one, so
it stays on loopback.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from edgecloud.testbed.processes import ManagedProcess, http_ok

ROOT = Path(__file__).resolve().parents[1]
LITELLM_VERSION = "1.108.7"  # the version issue 14 measured; installs on Python 3.11
LITELLM_REQUIREMENT = f"litellm[proxy]=={LITELLM_VERSION}"
VENV = ROOT / ".cache" / "bench" / "litellm-venv"
INSTALL_TIMEOUT_S = 900.0
STARTUP_TIMEOUT_S = 120.0
# The proxy fetches a model cost map from the internet at import unless told to use its own copy.
OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def installed_version(venv: Path = VENV) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
    done = subprocess.run(probe, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_venv(venv: Path = VENV) -> Path:
    """The ``litellm`` command of a venv holding the pinned version: created and installed if need be."""
    if installed_version(venv) != LITELLM_VERSION:
        commands = [[sys.executable, "-m", "venv", str(venv)]] if not (venv / "bin" / "python").exists() else []
        commands.append([str(venv / "bin" / "pip"), "install", "--quiet", LITELLM_REQUIREMENT])
        for command in commands:
            print(f"[litellm] {shlex.join(command)}", flush=True)
            subprocess.run(command, check=True, timeout=INSTALL_TIMEOUT_S)
        if installed_version(venv) != LITELLM_VERSION:
            raise SystemExit(f"{venv} does not hold litellm {LITELLM_VERSION} after the install")
    return venv / "bin" / "litellm"


def proxy_process(port: int, backend_url: str, model: str, master_key: str, logs: Path) -> ManagedProcess:
    """LiteLLM's proxy on ``port`` serving ``model`` from the OpenAI-compatible ``backend_url`` (with /v1)."""
    config = {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {"model": f"openai/{model}", "api_base": backend_url, "api_key": "unused"},
            }
        ],
        "general_settings": {"master_key": master_key},
    }
    config_path = logs / "litellm.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    argv = [str(ensure_venv()), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1"]  # fmt: skip
    return ManagedProcess(
        "litellm",
        argv,
        logs / "litellm.log",
        http_ok(f"http://127.0.0.1:{port}/health/liveliness"),
        env=OFFLINE_ENV,
        startup_timeout_s=STARTUP_TIMEOUT_S,
    )
