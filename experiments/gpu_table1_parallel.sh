#!/usr/bin/env bash
# One lent-GPU command: Table 1 of one family (TABLES=1,3,4,6: with the ablation rows of Tables 3,
# 4 and 6, all from one teacher, as one seed's rows should be). Every run trains in its own process, all started at
# once, so that the device is shared: the teachers and baselines first, the PPID students waiting
# for their teachers (the plan's lock on the teacher's folder; docs/reproduce.md). The runs are the
# plan's own (`ppid reproduce --only`): hashes, selection and report are a sequential plan's.
# The iterations are ITERATIONS, or else the most (up to MAX_ITERATIONS, default the budget's) at
# which the two waves fit in the time left after the data, from the plan's timing probe on this
# machine (experiments/parallel_fit.py, with CONCURRENCY, default 2). TEACHER_SEEDS (default 0)
# adds teachers and their PPID students (`--teacher-seeds`); DEVICE overrides the budget's device
# (cpu_small's schedule on a GPU: BUDGET=cpu_small DEVICE=cuda); ONE_STUDENT=1 gives teacher T only
# the PPID student of seed SEEDS[T mod len(SEEDS)] (a grid of teachers: docs/results.md). The run
# list and the iterations both come from experiments/parallel_fit.py. Whatever finished is packed (no
# weights, no data) into $OUT/reproduce.tar.gz with each process's log, even when LIMIT_S cuts
# the students short.
#   OUT=/path LIMIT_S=540 bash experiments/gpu_table1_parallel.sh indexnet 0
#   OUT=/path LIMIT_S=540 BUDGET=cpu_small DEVICE=cuda TEACHER_SEEDS=0,1,2 bash experiments/gpu_table1_parallel.sh indexnet 0,1
#   OUT=/path LIMIT_S=550 BUDGET=cpu_small DEVICE=cuda TEACHER_SEEDS=0,1,2,3,4,5 ONE_STUDENT=1 bash experiments/gpu_table1_parallel.sh indexnet 0,1,2
#   OUT=/path LIMIT_S=550 BUDGET=cpu_small DEVICE=cuda TABLES=1,3,4,6 CONCURRENCY=2.4 bash experiments/gpu_table1_parallel.sh indexnet 1
set -uo pipefail
family=${1:?family}; seeds=${2:?seeds, e.g. 0,1,2}
py=${PY:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
work=${WORK:-/tmp/reproduce_gpu_small}
mkdir -p "$OUT" "$work/logs"
deadline=$((SECONDS + ${LIMIT_S:-480}))
budget=${BUDGET:-gpu_small}; teacher_seeds=${TEACHER_SEEDS:-0}; tables=${TABLES:-1}
args=(--budget "$budget" --tables "$tables" --families "$family" --seeds "$seeds" --teacher-seeds "$teacher_seeds" --out "$work")
[ -n "${DEVICE:-}" ] && args+=(--device "$DEVICE")
{ nvidia-smi -L; "$py" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/env.txt" 2>&1
"$py" -m ppid reproduce "${args[@]}" --max-runs 0 >> "$OUT/session.log" 2>&1  # the data, before the clock is read
echo "data ready at ${SECONDS}s" >> "$OUT/session.log"
fit_args=(--family "$family" --tables "$tables" --seeds "$seeds" --teacher-seeds "$teacher_seeds" --budget "$budget" ${DEVICE:+--device "$DEVICE"})
[ -n "${ONE_STUDENT:-}" ] && fit_args+=(--one-student)
iterations=${ITERATIONS:-$("$py" experiments/parallel_fit.py --seconds $((deadline - SECONDS - ${MARGIN_S:-60})) \
  "${fit_args[@]}" --concurrency "${CONCURRENCY:-2}" ${MAX_ITERATIONS:+--max-iterations "$MAX_ITERATIONS"} 2>> "$OUT/session.log")}
[ "${iterations:-0}" -gt 0 ] || { echo "no iteration count fits (see session.log)" | tee -a "$OUT/session.log"; exit 1; }
args+=(--iterations "$iterations")

# Progress bars rewrite one line with \r: keep the records, drop the bars.
quiet() { tr '\r' '\n' | grep --line-buffered -v -E 'it/s|s/it|img/s'; }

echo "$iterations iterations" | tee -a "$OUT/session.log"
mapfile -t runs < <("$py" experiments/parallel_fit.py --list "${fit_args[@]}")
for run in "${runs[@]}"; do
  ( timeout $((deadline - SECONDS)) "$py" -m ppid reproduce "${args[@]}" --only "$run" 2>&1 \
      | quiet > "$work/logs/$(echo "${run#runs/*/}" | tr / _).log"
    echo "$run ended at ${SECONDS}s" | tee -a "$OUT/session.log" ) &
done
wait
"$py" -m ppid reproduce "${args[@]}" --report-only 2>&1 | quiet | tee -a "$OUT/session.log"
grep -h "test whole-image SAD\|FAILED\|rror" "$work"/logs/*.log | tee -a "$OUT/session.log"
tar czf "$OUT/reproduce.tar.gz" -C "$work" --exclude='*.safetensors' --exclude='*.pt' --exclude=data --exclude=tb .
