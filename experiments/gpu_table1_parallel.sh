#!/usr/bin/env bash
# One lent-GPU command: Table 1 of one family. The iterations are ITERATIONS, or else the most that
# fit the plan's runs one after another in FIT_S seconds (the plan's timing probe). Every run
# trains in its own process, all started at once, so that one process's start-up, validation and
# test evaluation overlap another's training: the baselines beside the teacher, the PPID students
# waiting for it (the plan's lock on the teacher's folder; docs/reproduce.md). The runs are the plan's own (`ppid reproduce --only`): hashes, selection and report
# are a sequential plan's. Whatever finished is packed (no weights, no data) into
# $OUT/reproduce.tar.gz with each process's log, even when LIMIT_S cuts the students short.
#   OUT=/path FIT_S=380 LIMIT_S=540 bash experiments/gpu_table1_parallel.sh indexnet 0
set -uo pipefail
family=${1:?family}; seeds=${2:?seeds, e.g. 0,1,2}
py=${PY:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
work=${WORK:-/tmp/reproduce_gpu_small}
mkdir -p "$OUT" "$work/logs"
deadline=$((SECONDS + ${LIMIT_S:-480}))
args=(--budget "${BUDGET:-gpu_small}" --tables 1 --families "$family" --seeds "$seeds" --out "$work")
{ nvidia-smi -L; "$py" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/env.txt" 2>&1
iterations=${ITERATIONS:-$("$py" -m ppid reproduce "${args[@]}" --fit "${FIT_S:?FIT_S or ITERATIONS}" --dry-run 2>&1 \
  | tee "$OUT/session.log" | sed -n 's/.*continue this plan with --iterations \([0-9]*\).*/\1/p')}
[ -n "$iterations" ] || { echo "no iteration count (see session.log)" | tee -a "$OUT/session.log"; exit 1; }
args+=(--iterations "$iterations")

# Progress bars rewrite one line with \r: keep the records, drop the bars.
quiet() { tr '\r' '\n' | grep --line-buffered -v -E 'it/s|s/it|img/s'; }

echo "$iterations iterations" | tee -a "$OUT/session.log"
runs=("teacher/seed0")
for seed in ${seeds//,/ }; do runs+=("baseline/seed$seed" "ppid/seed$seed"); done
for run in "${runs[@]}"; do
  ( timeout $((deadline - SECONDS)) "$py" -m ppid reproduce "${args[@]}" --only "runs/$family/$run" 2>&1 \
      | quiet > "$work/logs/${run//\//_}.log"
    echo "$run ended at ${SECONDS}s" | tee -a "$OUT/session.log" ) &
done
wait
"$py" -m ppid reproduce "${args[@]}" --report-only 2>&1 | quiet | tee -a "$OUT/session.log"
grep -h "test whole-image SAD\|FAILED\|rror" "$work"/logs/*.log | tee -a "$OUT/session.log"
tar czf "$OUT/reproduce.tar.gz" -C "$work" --exclude='*.safetensors' --exclude='*.pt' --exclude=data --exclude=tb .
