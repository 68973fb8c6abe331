#!/usr/bin/env bash
# Edge LLM, GPU recipe: vLLM serving Llama-3-8B-Instruct (the paper's edge model) on one GPU, OpenAI-compatible.
# The same server as the edge-llm-gpu service of docker-compose.yml's `gpu` profile, for a GPU host without compose.
# Usage: edge-llm/gpu/serve.sh [PORT] [extra vLLM args...]   (PORT defaults to 8001, the local testbed's edge port)
# Env: HF_TOKEN (required: Llama 3 is gated), GPU (device index, default 0), HF_CACHE (default ~/.cache/huggingface).
set -euo pipefail
port=${1:-8001}
shift $(( $# < 1 ? $# : 1 ))
: "${HF_TOKEN:?export HF_TOKEN: meta-llama/Meta-Llama-3-8B-Instruct is gated on Hugging Face}"
exec docker run --rm --name edge-llm-gpu --gpus "device=${GPU:-0}" --ipc=host -p "$port:8000" \
  -e HF_TOKEN -v "${HF_CACHE:-$HOME/.cache/huggingface}:/root/.cache/huggingface" \
  --entrypoint vllm vllm/vllm-openai:v0.30.0 \
  serve meta-llama/Meta-Llama-3-8B-Instruct --host 0.0.0.0 --port 8000 --max-model-len 8192 "$@"
