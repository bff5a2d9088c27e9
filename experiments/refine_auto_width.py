"""Refine mode's automatic band width (issue 13): one fixed width for every image, or a width per
image from how unsure the student is (ppid.refine, width "auto": auto_scale x the share of the
image where 0.05 < alpha < 0.95)?

On the validation split, every student is refined under each (thresholds, auto_scale) of the grid;
one rule is chosen for all students together (the lowest mean whole-image SAD), since it is to be
the command's documented setting, not a per-student fit. The test set is then read once per
student with that rule. Each student's fixed rule, chosen per student on the same validation split
by experiments/refine_table.py, is read from its refine.json (--fixed) and printed beside it.
Writes auto_width.json and auto_width.md into --out.

    python experiments/refine_auto_width.py --teacher T.safetensors --student ppid_seed0=P.safetensors \
        --fixed results/refine/x/ppid_seed0/refine.json --val data/val --test data/test --out results/refine/x/auto_width
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import evaluate_model, gap_closed, relative_to_folder
from ppid.io import command_line
from ppid.models import load_model
from refine_table import GROUPS, Memoised, sads, write_report

THRESHOLDS = [(0.05, 0.95), (0.45, 0.55)]
SCALES = [0.1, 0.15, 0.2, 0.25]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--student", action="append", required=True, metavar="LABEL=WEIGHTS")
    p.add_argument("--fixed", action="append", default=[], type=Path, metavar="REFINE_JSON",
                   help="refine_table.py's refine.json for these students: their fixed rules, for comparison")
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    torch.set_num_threads(1)
    device = torch.device("cpu")
    teacher = load_model(args.teacher, device=device)
    val, test = CompositeTestSet(args.val), CompositeTestSet(args.test)
    students = {}
    for spec in args.student:
        label, _, path = spec.partition("=")
        students[label] = (Path(path), Memoised(load_model(Path(path), device=device)))
    fixed = {}
    for path in args.fixed:
        fixed.update(json.loads(path.read_text())["students"])
    started = time.time()

    sweep = []
    for (low, high), scale in itertools.product(THRESHOLDS, SCALES):
        rule = {"low": low, "high": high, "width": "auto", "auto_scale": scale}
        val_sad = {label: sads(evaluate_model(s, val, device, refiner=teacher, rule=rule))["all"]
                   for label, (_, s) in students.items()}
        sweep.append({"rule": rule, "val_sad": val_sad, "mean": float(np.mean(list(val_sad.values())))})
        print(f"val {rule}: mean SAD {sweep[-1]['mean']:.3f} {val_sad}", flush=True)
    chosen = min(sweep, key=lambda r: r["mean"])

    doc = {"command": command_line(), "teacher": relative_to_folder(args.teacher, args.out),
           "selection": "one rule for all students: the lowest mean validation whole-image SAD",
           "val_sweep": sweep, "rule": chosen["rule"], "students": {}}
    teacher_test = sads(evaluate_model(teacher, test, device))
    doc["teacher_true_trimap"] = teacher_test
    for label, (path, student) in students.items():
        alone = sads(evaluate_model(student, test, device))
        refined = sads(evaluate_model(student, test, device, refiner=teacher, rule=chosen["rule"]))
        row = {"weights": relative_to_folder(path, args.out), "val_auto": chosen["val_sad"][label],
               "test_student": alone, "test_auto": refined,
               "gap_closed_auto": {g: gap_closed(alone[g], refined[g], teacher_test[g]) for g in GROUPS}}
        if label in fixed:
            f = fixed[label]
            row["fixed_rule"] = f["rule"]
            row["val_fixed"] = next(r["val_sad"] for r in f["val_sweep"] if r["rule"] == f["rule"])
            row["test_fixed"] = f["test_whole"]["refined"]
        doc["students"][label] = row
        print(f"{label}: test alone {alone['all']:.2f}, auto {refined['all']:.2f}", flush=True)
    doc["wall_s"] = round(time.time() - started, 1)
    write_report(args.out, "auto_width", doc, markdown(doc))
    return 0


def markdown(doc):
    r = doc["rule"]
    lines = [f"Refine with the automatic band width: thresholds {r['low']}/{r['high']}, width auto, "
             f"auto_scale {r['auto_scale']} (one rule for all students, chosen on validation). "
             "Whole-image SAD (sum / 1000); the fixed rule is each student's own validation choice.", "",
             "| student | val: fixed / auto | test alone | test fixed | test auto: transparent / non-transparent / whole | gap closed, auto: transparent / non-transparent / whole |",
             "|---|---|---|---|---|---|"]
    for label, s in doc["students"].items():
        fixed_val = f"{s['val_fixed']:.2f}" if "val_fixed" in s else "-"
        fixed_test = f"{s['test_fixed']['all']:.2f}" if "test_fixed" in s else "-"
        auto = " / ".join(f"{s['test_auto'][g]:.2f}" for g in GROUPS)
        gap = " / ".join("n/a" if s["gap_closed_auto"][g] is None else f"{100 * s['gap_closed_auto'][g]:.0f}%" for g in GROUPS)
        lines.append(f"| {label} | {fixed_val} / {s['val_auto']:.2f} | {s['test_student']['all']:.2f} | {fixed_test} | {auto} | {gap} |")
    t = doc["teacher_true_trimap"]
    lines.append(f"\nTeacher with the true trimap (upper bound): {t['transparent']:.2f} / {t['non-transparent']:.2f} / {t['all']:.2f}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
