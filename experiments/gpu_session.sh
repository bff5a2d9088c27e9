#!/usr/bin/env bash
# Everything measured on a lent GPU, in one command of under ten minutes (device tool, $OUT):
#   1. environment; 2. a training-step probe (benchmarks/train_speed.py) that sizes the
#   experiment's iterations to TRAIN_BUDGET_S; 3. the first experiment (experiments/distill.sh
#   gpu_small: IndexNet teacher -> baseline -> PPID); 4. the model, data and foreground benchmarks.
# Each step has its own timeout, so one failure cannot eat the others' time.
# usage (repo root): OUT=dir experiments/gpu_session.sh
# env: TRAIN_BUDGET_S (default 240), VARIANT (gpu_small), BENCH_DEVICE (cuda), MAX_ITERATIONS (6000),
#      PROBE_ARGS (default "--size 256 --batch-size 32 --steps 15 --warmup 5", as gpu_small trains)
set -uo pipefail
out=${OUT:?set OUT}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 PPID_CMD="python -m ppid"
budget=${TRAIN_BUDGET_S:-240}
variant=${VARIANT:-gpu_small}
dev=${BENCH_DEVICE:-cuda}
exp=/tmp/ppid_exp
log=$out/session.log
note() { echo "[$(date +%T)] $*" | tee -a "$log"; }

note "environment"
{ nvidia-smi 2>&1 || true; python -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"; } > "$out/env.txt" 2>&1

note "probe: training-step speed (indexnet, 256 px, batch 32)"
timeout 90 python benchmarks/train_speed.py --family indexnet ${PROBE_ARGS:---size 256 --batch-size 32 --steps 15 --warmup 5} \
  --device "$dev" --out "$out/train_speed_$dev.json" >> "$log" 2>&1 || note "probe failed"
iterations=$(python - "$out/train_speed_$dev.json" "$budget" "${MAX_ITERATIONS:-6000}" <<'PY'
import json, sys
try:
    modes = json.load(open(sys.argv[1]))["modes"]
    per_round = sum(m["ms_per_step"] for m in modes.values()) * 1.2 / 1000  # +20% for the augmenter
    print(min(int(sys.argv[3]), max(200, int(float(sys.argv[2]) / per_round))))
except Exception:  # no probe: a conservative count
    print(min(1000, int(sys.argv[3])))
PY
)
note "experiment: $variant with $iterations iterations per model"
rm -rf "$exp"
ITERATIONS=$iterations SYNTH_WORKERS=12 timeout $((budget + 150)) experiments/distill.sh "$variant" "$exp" indexnet \
  > "$out/experiment.log" 2>&1 || note "experiment failed or timed out (see experiment.log)"
cp "$exp/table.txt" "$out/table.txt" 2>/dev/null
(cd "$exp" 2>/dev/null && tar czf "$out/experiment.tgz" --exclude='*.pt' --exclude='*.safetensors' --exclude=data \
  table.txt results.json teacher student ppid 2>/dev/null)

note "benchmarks"
timeout 90 python benchmarks/models_speed.py --device "$dev" --out "$out/models_speed_$dev.json" >> "$log" 2>&1 || note "models_speed failed"
timeout 50 python benchmarks/data_speed.py --device cpu "$dev" --batch-size 32 --out "$out/data_speed_$dev.json" >> "$log" 2>&1 || note "data_speed failed"
# the torch estimator only: pymatting (its CPU reference) is measured on the CPU box
timeout 120 python benchmarks/foreground_quality.py --device "$dev" --methods ppid_torch,naive \
  --out "$out/foreground_quality_$dev.json" >> "$log" 2>&1 || note "foreground_quality failed"
note "done"
cat "$out/table.txt" 2>/dev/null
