"""Iterations for gpu_table1_parallel.sh, whose runs train side by side in two waves of processes:
the teachers beside the baselines, then the distilling students (they wait for their teachers:
Table 1's PPID students, and with --tables the ablation rows of Tables 3, 4 and 6). The plan's
own `--fit` adds the runs up one after another; on a GPU that small runs leave mostly idle,
processes side by side share it, so each wave takes about

    start-up + N * max(sum of its runs' step times / CONCURRENCY, its slowest run's step time)
            + its runs' evaluations / CONCURRENCY

with the step and evaluation times from the plan's timing probe on this machine (first step
included). Prints the largest N (a multiple of 50, or --max-iterations itself) at which both waves
fit in --seconds, or 0.

    python experiments/parallel_fit.py --seconds 420 --family indexnet --seeds 0,1 --teacher-seeds 0,1,2 \
        --budget cpu_small --device cuda
    python experiments/parallel_fit.py --seconds 480 --family indexnet --seeds 1 --tables 1,3,4,6 \
        --budget cpu_small --device cuda
"""

import argparse
import sys

from ppid.reproduce.plan import RECALIBRATION_IMAGES, make_plan
from ppid.reproduce.probe import cost_key, estimate
from ppid.reproduce.teachers import one_student_per_teacher, with_teacher_seeds


def wave_seconds(runs, iterations, settings, step_cost, eval_cost, concurrency, start_up):
    steps = [step_cost[cost_key(r)][1] for r in runs]
    first = max(step_cost[cost_key(r)][0] for r in runs)
    images = settings["n_test"] * settings["test_per_fg"]
    validations = -(-iterations // settings["val_every"])
    evals = 0.0
    for run in runs:  # validations, the test set, and for students the recalibrated test set
        recal = 0 if run.variant == "teacher" else images + RECALIBRATION_IMAGES
        evals += (validations * settings["n_val"] + images + recal) * eval_cost[run.family]
    return start_up + first + iterations * max(sum(steps) / concurrency, max(steps)) + evals / concurrency


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, help="time for both waves (required unless --list)")
    p.add_argument("--family", required=True)
    p.add_argument("--tables", default="1", help="the plan's tables (default 1; 1,3,4,6: a seed's every row from one teacher)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--teacher-seeds", default="0")
    p.add_argument("--budget", default="gpu_small")
    p.add_argument("--device")
    p.add_argument("--concurrency", type=float, default=2.0,
                   help="how many processes' work the device does at once, relative to one (default 2)")
    p.add_argument("--start-up", type=float, default=45.0,
                   help="seconds a fresh process takes to its first step (CUDA, cuDNN; 45 s on the H100, session 10)")
    p.add_argument("--max-iterations", type=int, help="at most this many (default: the budget's)")
    p.add_argument("--one-student", action="store_true",
                   help="teacher T distils only student seed SEEDS[T %% len(SEEDS)] (more teachers, not more students)")
    p.add_argument("--list", action="store_true", help="print the runs' folders, first wave first, and exit")
    args = p.parse_args(argv)
    if args.seconds is None and not args.list:
        p.error("--seconds is required (unless --list)")
    seeds = [int(s) for s in args.seeds.split(",")]
    teacher_seeds = [int(s) for s in args.teacher_seeds.split(",")]
    tables = [int(t) for t in args.tables.split(",")]
    runs, settings, data = make_plan(tables, (args.family,), seeds, args.budget, None, 2, args.device)
    runs = with_teacher_seeds(runs, settings, data, teacher_seeds)
    if args.one_student:
        runs = one_student_per_teacher(runs, seeds, teacher_seeds)
    first_wave = [r for r in runs if r.kind != "ppid"]
    second_wave = [r for r in runs if r.kind == "ppid"]
    if args.list:
        print("\n".join(r.folder for r in first_wave + second_wave))
        return
    _, step_cost, eval_cost = estimate(runs, settings, log=lambda m: print(m, file=sys.stderr))
    best, most = 0, args.max_iterations or settings["iterations"]
    for n in sorted(set(range(50, most + 1, 50)) | {most}):
        total = sum(wave_seconds(wave, n, settings, step_cost, eval_cost, args.concurrency, args.start_up)
                    for wave in (first_wave, second_wave) if wave)
        if total <= args.seconds:
            best = n
    print(f"parallel fit: {len(first_wave)} + {len(second_wave)} runs in two waves, concurrency {args.concurrency:g}: "
          f"{best} iterations fit {args.seconds:.0f}s", file=sys.stderr)
    print(best)


if __name__ == "__main__":
    main()
