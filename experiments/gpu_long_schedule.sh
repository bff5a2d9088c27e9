#!/usr/bin/env bash
# One lent-GPU command, or two back to back: more seeds of the 6000-iteration pair of
# results/long_schedule/ (the baseline and the PPID student of teacher 2, float32, differing only in
# `mode` and the teacher), every run in its own process, all started at once so that they share the
# device. Teacher 2's weights come with the command (carry results/reproduce/cpu_small/runs/indexnet/
# teacher/seed2/model_best.safetensors, 24 MB); the data (131 MB, too large to carry) is rebuilt by
# the plan (`ppid reproduce --max-runs 0`, the same seeded build as this machine's).
#
# One PPID run of 6000 iterations needs more than one device command may run (session 28 on an
# H200: 0.089 s a step in float32 and 8.4 s a validation, about 630 s), so the runs start in sessions of
# their own (setsid) and outlive the command: with EXTRA_S > 0 the command ends at its deadline
# leaving them training, and the same command, called again at once (the machine stays warm for
# 30 s), finds them, waits, evaluates and packs. Each call packs what it has.
#
# Sizing: from PROBE_S seconds on, once every run has logged step 50, each run's step rate (the
# samples/s of its log.jsonl, the median of its last three windows) gives the time it still needs,
# validations counted as 100 steps each; while the slowest run would finish after the deadline (this
# call's, plus EXTRA_S for a follow-up call), the last seed's runs (its pair, or its KINDS) are
# stopped, down to one seed, whose runs train until the last call's deadline cuts them. A seed's
# runs are stopped together, never in part.
# (On the H200 two processes and four each ran at the same rate: session 28.)
# Whatever finished is evaluated on the test set and packed, without weights, into
# $OUT/long_schedule.tar.gz with each process's log; runs cut by the last call's deadline are packed
# too, marked in session.log.
#   OUT=/path LIMIT_S=590 EXTRA_S=150 MARGIN_S=45 SEEDS=1,3 bash experiments/gpu_long_schedule.sh  # call 1
#   OUT=/path LIMIT_S=190 MARGIN_S=45 SEEDS=1,3 CONTINUE=1 bash experiments/gpu_long_schedule.sh   # call 2, at once
# On the CPU, to check the script itself (this machine's data):
#   OUT=/tmp/o DEVICE=cpu ITERATIONS=10 SEEDS=1 PROBE_S=20 LIMIT_S=400 DATA=results/reproduce/cpu_small/data bash ...
set -uo pipefail
py=${PY:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
IFS=, read -ra seeds <<< "${SEEDS:?SEEDS, e.g. 1,3}"
# KINDS: the runs of a seed's group, each results/long_schedule/KIND_seed0_6000.json with only the
# seed changed; the pair by default, e.g. KINDS=baseline,ppid_teacher2,ppid_teacher2_noclsd adds
# the cause test to every seed (the runs are host-bound: more processes cost the GPU little).
IFS=, read -ra kinds <<< "${KINDS:-baseline,ppid_teacher2}"
for kind in "${kinds[@]}"; do
  [ -f "results/long_schedule/${kind}_seed0_6000.json" ] || { echo "no results/long_schedule/${kind}_seed0_6000.json" >&2; exit 1; }
done
device=${DEVICE:-cuda}; iterations=${ITERATIONS:-6000}; probe_s=${PROBE_S:-90}; extra_s=${EXTRA_S:-0}
work=${WORK:-/tmp/long_schedule_gpu}
teacher=results/reproduce/cpu_small/runs/indexnet/teacher/seed2/model_best.safetensors
mkdir -p "$OUT" "$work/logs"
deadline=$((SECONDS + ${LIMIT_S:-540} - ${MARGIN_S:-60}))  # the margin: test-set evaluations and the packing
log() { echo "$*" | tee -a "$OUT/session.log" "$work/session.log"; }
alive() { [ -f "$work/$1.pid" ] && kill -0 "$(cat "$work/$1.pid")" 2>/dev/null; }
finished() { [ -f "$work/$1/model_best.safetensors" ] && grep -q '"step": '"$iterations"'[,}]' "$work/$1/log.jsonl" 2>/dev/null; }
data=${DATA:-$work/plan/data}  # DATA: a built copy of the plan's data (this machine's, say)

if [ -f "$work/started" ]; then
  log "call again at ${SECONDS}s: continuing the runs started earlier"
elif [ "${CONTINUE:-0}" = 1 ]; then  # a second call that found a fresh machine: starting over would waste it
  log "nothing to continue at $work: the machine is not the first call's (given back in between?)"; exit 1
else
  [ -f "$teacher" ] || { log "teacher 2's weights are missing: carry $teacher"; exit 1; }
  { nvidia-smi -L; "$py" -c "import torch; print('torch', torch.__version__)"; } > "$work/env.txt" 2>&1
  if [ -z "${DATA:-}" ]; then  # the plan's data only, in a folder of its own (its report stays out of the checkout)
    "$py" -m ppid reproduce --budget cpu_small --tables 1 --families indexnet --seeds 0 \
      --out "$work/plan" --max-runs 0 >> "$work/session.log" 2>&1
  fi
  [ -d "$data/train" ] || { log "no data at $data (see session.log)"; exit 1; }
  log "data ready at ${SECONDS}s"
  for seed in "${seeds[@]}"; do
    for kind in "${kinds[@]}"; do
      name=${kind}_seed${seed}_6000
      # A session of its own, so that the run outlives this command; the pid file names the trainer.
      setsid bash -c 'echo $$ > "$0.pid"; exec "$@"' "$work/$name" \
        "$py" -m ppid train --config "results/long_schedule/${kind}_seed0_6000.json" --set train.seed="$seed" \
        --set train.device="$device" --set optim.iterations="$iterations" --set name="indexnet_$name" \
        --set data.train_root="$data/train" --set data.val_root="$data/val" --set data.workers="${WORKERS:-2}" \
        --out "$work/$name" > "$work/logs/$name.log" 2>&1 < /dev/null &
    done
  done
  touch "$work/started"
  sleep 5
fi

# Seconds run NAME still needs, from the step rate of its log's last rows (samples/s over the last
# 50 steps), its validations at 100 steps each; -1 until it has logged step 50 (or its last).
needs() {
  "$py" - "$work/$1/log.jsonl" "$iterations" <<'PY'
import json, sys
path, iterations = sys.argv[1], int(sys.argv[2])
try:
    rows = [json.loads(line) for line in open(path)]
except OSError:
    rows = []
steps = [r for r in rows if "samples_per_s" in r and r["step"] >= min(50, iterations)]
if not steps:
    print(-1); sys.exit()
per_step = 8 / sorted(r["samples_per_s"] for r in steps[-3:])[len(steps[-3:]) // 2]  # batch 8; the median recent window
validations = -(-iterations // 500) - sum(r.get("event") == "validation" for r in rows)
print(int((iterations - steps[-1]["step"] + 100 * validations) * per_step))
PY
}

kept=(); for seed in "${seeds[@]}"; do [ -f "$work/stopped_seed$seed" ] || kept+=("$seed"); done
[ -f "$work/probed" ] || sleep "$probe_s"
touch "$work/probed"
while [ ${#kept[@]} -gt 0 ] && [ "$SECONDS" -lt "$deadline" ]; do
  slowest=0
  for seed in "${kept[@]}"; do
    for kind in "${kinds[@]}"; do
      name=${kind}_seed${seed}_6000
      finished "$name" && continue
      alive "$name" || { log "$name is not running (see logs/$name.log)"; continue; }
      n=$(needs "$name"); [ "$n" -lt 0 ] && slowest=-1 && break 2
      [ "$n" -gt "$slowest" ] && slowest=$n
    done
  done
  if [ "$slowest" -lt 0 ]; then sleep 15; continue; fi  # a run has not logged step 50 yet
  log "probe at ${SECONDS}s: seeds ${kept[*]}, the slowest run needs about ${slowest}s more, $((deadline + extra_s - SECONDS))s left"
  [ $((SECONDS + slowest)) -le $((deadline + extra_s)) ] && break
  [ ${#kept[@]} -eq 1 ] && { log "the last seed's runs train on (stopping them gains nothing)"; break; }
  last=${kept[-1]}; unset 'kept[-1]'
  for kind in "${kinds[@]}"; do alive "${kind}_seed${last}_6000" && kill "$(cat "$work/${kind}_seed${last}_6000.pid")"; done
  touch "$work/stopped_seed$last"
  log "stopped the seed-$last runs: they would not finish in time"
  sleep 30
done

# Wait for the kept runs until this call's deadline; with a follow-up call planned, leave the rest training.
running=()
for seed in "${kept[@]}"; do
  for kind in "${kinds[@]}"; do
    name=${kind}_seed${seed}_6000
    if alive "$name"; then
      remaining=$((deadline - SECONDS)); [ "$remaining" -lt 1 ] && remaining=1
      timeout "$remaining" tail --pid="$(cat "$work/$name.pid")" -f /dev/null || running+=("$name")
    fi
  done
done
for name in "${running[@]}"; do
  if [ "$extra_s" -gt 0 ]; then
    log "$name still training at ${SECONDS}s ($(grep -c samples_per_s "$work/$name/log.jsonl") log rows): call again at once"
  else
    kill "$(cat "$work/$name.pid")" 2>/dev/null; log "$name cut by the deadline"
  fi
done
evaluated=(); evaluations=()
for seed in "${kept[@]}"; do
  for kind in "${kinds[@]}"; do
    name=${kind}_seed${seed}_6000
    if finished "$name" && [ ! -f "$work/$name/test.json" ]; then
      evaluated+=("$name")
      "$py" -m ppid evaluate --model "$work/$name/model_best.safetensors" --data "$data/test" --workers 2 \
        --region both --json "$work/$name/test.json" --device "$device" >> "$work/logs/$name.log" 2>&1 &
      evaluations+=($!)
    fi
  done
done
[ ${#evaluations[@]} -eq 0 ] || wait "${evaluations[@]}"  # side by side; not the runs, which may still be training
for name in "${evaluated[@]}"; do
  log "$name: test whole-image SAD $("$py" -c 'import json, sys; s = next(iter(json.load(open(sys.argv[1]))["summaries"].values())); print(round(s["results"]["whole"]["all"]["sad"], 3))' "$work/$name/test.json")"
done
mkdir -p "$work/logs_clean"
for f in "$work"/logs/*.log; do tr '\r' '\n' < "$f" | grep -v 'it/s' > "$work/logs_clean/$(basename "$f")"; done  # progress bars out
tar czf "$OUT/long_schedule.tar.gz" -C "$work" --exclude='*.safetensors' --exclude='*.pt' --exclude=images \
  --exclude=logs --exclude=plan . 2>/dev/null
log "packed at ${SECONDS}s"
