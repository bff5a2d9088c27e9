#!/usr/bin/env bash
# The first experiment: does distillation help?
# Synthesises a training set (seed 0) and a held-out test set (seed 1, Composition-1K protocol,
# 2 backgrounds per foreground), trains FAMILY teacher -> baseline student -> PPID student with
# configs/FAMILY_{teacher,student,ppid}_VARIANT.yaml, and evaluates all three on the test set
# (whole image and transition region, per group): OUT/table.txt and OUT/results.json.
#
# usage: experiments/distill.sh cpu_small|gpu_small OUT [FAMILY]
# env:   PPID_CMD (the command, default "ppid"), N_TRAIN, N_TEST, SYNTH_SIZE, SYNTH_WORKERS,
#        SYNTH_VERSION (benchmark version, default 2; results before it existed used 1),
#        ITERATIONS (overrides the configs' optim.iterations for all three runs)
set -euo pipefail
variant=${1:?usage: distill.sh cpu_small|gpu_small OUT [FAMILY]}
out=${2:?usage: distill.sh cpu_small|gpu_small OUT [FAMILY]}
family=${3:-indexnet}
ppid=${PPID_CMD:-ppid}
case $variant in
  cpu_small) size=${SYNTH_SIZE:-256}; n_train=${N_TRAIN:-120}; n_test=${N_TEST:-30} ;;
  gpu_small) size=${SYNTH_SIZE:-512}; n_train=${N_TRAIN:-300}; n_test=${N_TEST:-40} ;;
  *) echo "unknown variant $variant" >&2; exit 2 ;;
esac
configs=$(dirname "$0")/../configs
workers=${SYNTH_WORKERS:-2}
synth_version=${SYNTH_VERSION:-2}
$ppid data synth --out "$out/data/train" --n-fg "$n_train" --seed 0 --size "$size" "$size" --workers "$workers" --version "$synth_version"
$ppid data synth --out "$out/data/test_src" --n-fg "$n_test" --seed 1 --size "$size" "$size" --workers "$workers" --version "$synth_version"
$ppid data build-testset --fg "$out/data/test_src/fg" --alpha "$out/data/test_src/alpha" \
  --bg "$out/data/test_src/bg" --per-fg 2 --out "$out/data/test" --split "$out/data/test_src/split.txt"
data=(--set "data.train_root=$out/data/train" --set "data.val_root=$out/data/test")
if [ -n "${ITERATIONS:-}" ]; then
  data+=(--set "optim.iterations=$ITERATIONS" --set "train.val_every=$ITERATIONS")
fi
$ppid train --config "$configs/${family}_teacher_${variant}.yaml" "${data[@]}" --out "$out/teacher"
$ppid train --config "$configs/${family}_student_${variant}.yaml" "${data[@]}" --out "$out/student"
$ppid train --config "$configs/${family}_ppid_${variant}.yaml" "${data[@]}" \
  --set "distill.teacher=$out/teacher/model_best.safetensors" --out "$out/ppid"
$ppid evaluate --data "$out/data/test" --json "$out/results.json" \
  --model "$out/teacher/model_best.safetensors" --label "$family (trimap)" \
  --model "$out/student/model_best.safetensors" --label "$family baseline" \
  --model "$out/ppid/model_best.safetensors" --label "$family-PPID" | tee "$out/table.txt"
