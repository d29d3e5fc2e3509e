#!/usr/bin/env bash
# Start vLLM's OpenAI-compatible server on a GPU node (profile gpu-cluster). Defaults match
# configs/gpu-cluster.yaml llm.server; every value can be overridden from the environment:
#   VLLM_MODEL VLLM_SERVED_NAME VLLM_HOST VLLM_PORT VLLM_DTYPE VLLM_MAX_MODEL_LEN
#   VLLM_TENSOR_PARALLEL_SIZE VLLM_GPU_MEMORY_UTILIZATION VLLM_EXTRA_ARGS (space-separated)
# Arguments given to this script are passed on to `vllm serve` after the defaults (later flags win).
# VLLM_HOST defaults to 0.0.0.0 because clients are other nodes of the cluster network: never expose that
# address publicly. The command is an argument list, never a string built from the environment.
set -euo pipefail

model="${VLLM_MODEL:-Qwen/Qwen2.5-7B-Instruct}"
served_name="${VLLM_SERVED_NAME:-qwen2.5-7b-instruct}"
host="${VLLM_HOST:-0.0.0.0}"
port="${VLLM_PORT:-8000}"
dtype="${VLLM_DTYPE:-bfloat16}"
max_model_len="${VLLM_MAX_MODEL_LEN:-16384}"
tensor_parallel_size="${VLLM_TENSOR_PARALLEL_SIZE:-2}"
gpu_memory_utilization="${VLLM_GPU_MEMORY_UTILIZATION:-0.90}"
# Set but empty VLLM_EXTRA_ARGS means no extra arguments.
read -r -a extra_args <<<"${VLLM_EXTRA_ARGS---enable-prefix-caching --max-num-seqs 256}"

args=(
  serve "$model"
  --served-model-name "$served_name"
  --host "$host"
  --port "$port"
  --dtype "$dtype"
  --max-model-len "$max_model_len"
  --tensor-parallel-size "$tensor_parallel_size"
  --gpu-memory-utilization "$gpu_memory_utilization"
  "${extra_args[@]}"
  "$@"
)
exec vllm "${args[@]}"
