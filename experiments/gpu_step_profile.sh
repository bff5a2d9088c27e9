#!/usr/bin/env bash
# One lent-GPU command: where does a PPID training step go at cpu_small's scale (128 px crops,
# batch 8, float32)? Session 28 measured 0.089 s a step on an H200, the same with two processes as
# with four, so the host bounds it. Three timings of the same student (teacher 2, the 6000-iteration
# config), written under $OUT:
#   train_speed_cuda_128.json  the objective's step alone (benchmarks/train_speed.py, GPU augmenter batches)
#   plain/log.jsonl            the real trainer, 300 steps (samples/s per 50 steps)
#   ppid_train.prof            the same under cProfile (read with pstats: the host-side hot spots)
#   OUT=/path bash experiments/gpu_step_profile.sh    (carry teacher 2's weights, as gpu_long_schedule.sh)
set -uo pipefail
py=${PY:-python3}; device=${DEVICE:-cuda}; steps=${STEPS:-300}; bench_steps=${BENCH_STEPS:-100}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
work=${WORK:-/tmp/step_profile}; data=${DATA:-$work/plan/data}
mkdir -p "$OUT" "$work"
{ nvidia-smi -L; "$py" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/env.txt" 2>&1
[ -n "${DATA:-}" ] || "$py" -m ppid reproduce --budget cpu_small --tables 1 --families indexnet --seeds 0 \
  --out "$work/plan" --max-runs 0 > "$work/plan.log" 2>&1
echo "data ready at ${SECONDS}s" | tee "$OUT/session.log"
"$py" benchmarks/train_speed.py --device "$device" --size 128 --batch-size 8 --amps none --modes student ppid \
  --steps "$bench_steps" --warmup "$((bench_steps < 10 ? 1 : 10))" --data "$data/train" --out "$OUT/train_speed_cuda_128.json" >> "$OUT/session.log" 2>&1
echo "train_speed done at ${SECONDS}s" | tee -a "$OUT/session.log"
args=(--config results/long_schedule/ppid_teacher2_seed0_6000.json --set train.device="$device"
      --set optim.iterations="$steps" --set train.val_every=100000 --set data.train_root="$data/train"
      --set data.val_root="$data/val" --set data.workers=2)
"$py" -m ppid train "${args[@]}" --out "$work/plain" 2>&1 | tr '\r' '\n' | grep -v 'it/s' > "$OUT/plain.log"
mkdir -p "$OUT/plain" && cp "$work/plain/log.jsonl" "$OUT/plain/"
echo "plain done at ${SECONDS}s" | tee -a "$OUT/session.log"
"$py" -m cProfile -o "$OUT/ppid_train.prof" -m ppid train "${args[@]}" --out "$work/profiled" 2>&1 | tr '\r' '\n' | grep -v 'it/s' > "$OUT/profiled.log"
echo "profiled done at ${SECONDS}s" | tee -a "$OUT/session.log"
