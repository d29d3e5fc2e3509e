#!/usr/bin/env bash
# Train SAVEn-Vid (the profile's preset, default 7b) with DDP on one or several GPU nodes.
#
# One node:      deploy/train.sh DATASET OUT                      (NPROC_PER_NODE GPUs, default all of them)
# Several nodes: run it on every node with the same MASTER_ADDR, NNODES and each node's NODE_RANK (0..NNODES-1):
#                MASTER_ADDR=10.0.0.5 NNODES=2 NODE_RANK=0 deploy/train.sh /mnt/shared/ds /mnt/shared/train
#
# DATASET must be a folder every node sees (a shared file system: the feature cache is written beside it, each rank
# encoding its share of the videos); OUT too (rank 0 writes the checkpoints, every rank reads the last one). The
# command is an argument list, never a string built from the environment.
set -euo pipefail
dataset="${1:?usage: deploy/train.sh DATASET OUT [extra model.train args]}"
out="${2:?usage: deploy/train.sh DATASET OUT [extra model.train args]}"
shift 2
preset="${PRESET:-7b}"
nproc="${NPROC_PER_NODE:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}"
[ "$nproc" -ge 1 ] || nproc=1
args=(--nproc_per_node "$nproc")
if [ -n "${MASTER_ADDR:-}" ]; then
  args+=(--nnodes "${NNODES:?set NNODES}" --node_rank "${NODE_RANK:?set NODE_RANK}"
         --rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR}:${MASTER_PORT:-29500}" --rdzv_id "${RUN_ID:-saven-train}")
else
  args+=(--standalone)
fi
exec torchrun "${args[@]}" -m model.train "$dataset" "$out" --preset "$preset" --stage both "$@"
