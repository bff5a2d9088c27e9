#!/usr/bin/env bash
# One lent-GPU command of `ppid reproduce --budget gpu_small`: the plan sizes its iterations from
# a timing probe (first step and validation included) to fit FIT_S seconds of training, every
# finished run writes its result.json, and whatever finished is packed (no weights, no data) into
# $OUT/reproduce.tar.gz even when the time limit cuts the plan short.
#   OUT=/path FIT_S=330 LIMIT_S=480 bash experiments/gpu_reproduce.sh --tables 1 --families indexnet --seeds 0 --calibrate-ald
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
work=${WORK:-/tmp/reproduce_gpu_small}
mkdir -p "$OUT" "$work"
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__)"; } > "$OUT/env.txt" 2>&1
timeout "${LIMIT_S:-480}" python3 -m ppid reproduce --budget gpu_small --fit "${FIT_S:-330}" --out "$work" "$@" 2>&1 \
  | tr '\r' '\n' | grep --line-buffered -v -E 'it/s|s/it|img/s' | tee "$OUT/session.log"
tar czf "$OUT/reproduce.tar.gz" -C "$work" --exclude='*.safetensors' --exclude='*.pt' --exclude=data --exclude=tb .
