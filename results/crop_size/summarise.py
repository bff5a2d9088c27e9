"""Prints the crop-size test's numbers that docs/results.md quotes: test-set SAD per run (whole image:
transparent / non-transparent / all; transition region: all) and the val-best step, beside the
`cpu_small` runs on 128 px crops at batch 8, then each setting's mean and paired differences over
the seeds that have both runs.

    python results/crop_size/summarise.py
"""
import json
from pathlib import Path

import numpy as np

here = Path(__file__).parent
plan = here.parent / "reproduce" / "cpu_small" / "runs" / "indexnet"
GROUPS = ("transparent", "non-transparent", "all")


def crop_run(folder):
    """(whole SAD per group, transition SAD, val-best step) of a crop-size run, or None if unfinished."""
    if not (folder / "test.json").is_file():
        return None
    summary = next(iter(json.loads((folder / "test.json").read_text())["summaries"].values()))["results"]
    done = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if '"event": "done"' in line]
    return ({g: summary["whole"][g]["sad"] for g in GROUPS}, summary["transition"]["all"]["sad"], done[-1]["best"]["step"])


def plan_run(folder):
    if not (folder / "result.json").is_file():
        return None
    result = json.loads((folder / "result.json").read_text())
    res = result["test"]["results"]
    return ({g: res["whole"][g]["sad"] for g in GROUPS}, res["transition"]["all"]["sad"], result["selected_step"])


settings = {
    "128 px crops x 8 (cpu_small)": lambda mode, seed: plan_run(plan / mode / f"seed{seed}"),
    "whole images x 2": lambda mode, seed: crop_run(here / "indexnet_size256_batch2" / mode / f"seed{seed}"),
    "128 px crops x 2 (control)": lambda mode, seed: crop_run(here / "indexnet_size128_batch2" / mode / f"seed{seed}"),
}
runs = {(name, mode, seed): read(mode, seed) for name, read in settings.items() for mode in ("baseline", "ppid") for seed in (0, 1, 2)}
print("whole-image SAD: transparent / non-transparent / all | transition | val-best step")
for (name, mode, seed), run in runs.items():
    if run:
        whole, transition, step = run
        print(f"  {mode:8s} {name:30s} seed {seed}: " + " / ".join(f"{whole[g]:.2f}" for g in GROUPS) + f" | {transition:.2f} | {step}")
for name in settings:
    for mode in ("baseline", "ppid"):
        done = [r for (n, m, _), r in runs.items() if n == name and m == mode and r]
        if done:
            print(f"{mode} {name}: mean over {len(done)} seeds " + " / ".join(f"{np.mean([r[0][g] for r in done]):.2f}" for g in GROUPS))
    both = [s for s in (0, 1, 2) if runs[(name, "baseline", s)] and runs[(name, "ppid", s)]]
    if both:
        diffs = {g: [runs[(name, "ppid", s)][0][g] - runs[(name, "baseline", s)][0][g] for s in both] for g in GROUPS}
        print(f"  ppid - baseline, {name}, seeds {both}: " + "; ".join(f"{g} " + " / ".join(f"{d:+.2f}" for d in diffs[g]) for g in GROUPS))
for mode in ("baseline", "ppid"):
    pairs = [s for s in (0, 1, 2) if runs[("whole images x 2", mode, s)] and runs[("128 px crops x 8 (cpu_small)", mode, s)]]
    if pairs:
        diffs = {g: [runs[("whole images x 2", mode, s)][0][g] - runs[("128 px crops x 8 (cpu_small)", mode, s)][0][g] for s in pairs] for g in GROUPS}
        print(f"{mode}: whole images x 2 - 128 px crops x 8, seeds {pairs}: " + "; ".join(f"{g} " + " / ".join(f"{d:+.2f}" for d in diffs[g]) for g in GROUPS))
