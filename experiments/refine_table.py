"""Refine mode measured (issue 13): student alone, student -> teacher, teacher with the true trimap.

The refine rule (ppid.refine.trimap_from_alpha: LOW < alpha < HIGH grown by WIDTH x the shorter
side) is chosen on the validation set, by whole-image SAD of student -> teacher, per student; the
test set is then read once with that rule. Writes refine.json and refine.md into --out.

    python experiments/refine_table.py --teacher T.safetensors --student baseline=B.safetensors \
        --student ppid=P.safetensors --val data/val --test data/test --out results/refine/x
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import evaluate_model, relative_to_folder
from ppid.io import atomic_path
from ppid.models import load_model
from ppid.refine import HIGH, LOW, WIDTH

THRESHOLDS = [(0.01, 0.99), (LOW, HIGH), (0.15, 0.85)]
WIDTHS = [0.0, 0.005, WIDTH, 0.02, 0.04]  # 0.0: one pixel (the rule's minimum)
GROUPS = ("transparent", "non-transparent", "all")


def sads(summary, region="whole"):
    return {g: summary["results"][region][g]["sad"] for g in GROUPS if g in summary["results"][region]}


def gap_closed(student, refined, teacher):
    """Share of the student-teacher SAD gap that refining closes."""
    gap = student - teacher
    return (student - refined) / gap if gap > 0 else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--student", action="append", required=True, metavar="LABEL=WEIGHTS")
    p.add_argument("--val", type=Path, required=True, help="built validation set: the rule is chosen here")
    p.add_argument("--test", type=Path, required=True, help="built test set: read once per student")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    device = torch.device("cpu")
    teacher = load_model(args.teacher, device=device)
    val, test = CompositeTestSet(args.val), CompositeTestSet(args.test)
    started = time.time()
    teacher_test = evaluate_model(teacher, test, device)
    doc = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "teacher": relative_to_folder(args.teacher, args.out),
        "val": relative_to_folder(args.val, args.out),
        "test": relative_to_folder(args.test, args.out),
        "selection": "rule with the lowest validation whole-image SAD of student -> teacher",
        "teacher_true_trimap": {"whole": sads(teacher_test), "transition": sads(teacher_test, "transition")},
        "students": {},
    }
    for spec in args.student:
        label, _, path = spec.partition("=")
        student = load_model(Path(path), device=device)
        sweep = []
        for (low, high), width in itertools.product(THRESHOLDS, WIDTHS):
            rule = {"low": low, "high": high, "width": width}
            sad = sads(evaluate_model(student, val, device, refiner=teacher, rule=rule))["all"]
            sweep.append({"rule": rule, "val_sad": sad})
            print(f"{label}: val rule {rule}: SAD {sad:.3f}", flush=True)
        chosen = min(sweep, key=lambda r: r["val_sad"])["rule"]
        alone = evaluate_model(student, test, device)
        refined = evaluate_model(student, test, device, refiner=teacher, rule=chosen)
        rows = {"student": sads(alone), "refined": sads(refined), "teacher": doc["teacher_true_trimap"]["whole"]}
        doc["students"][label] = {
            "weights": relative_to_folder(Path(path), args.out),
            "val_sweep": sweep,
            "rule": chosen,
            "val_student_alone": sads(evaluate_model(student, val, device))["all"],
            "test_whole": rows,
            "test_transition": {"student": sads(alone, "transition"), "refined": sads(refined, "transition")},
            "gap_closed_whole": {g: gap_closed(rows["student"][g], rows["refined"][g], rows["teacher"][g]) for g in GROUPS},
        }
    doc["wall_s"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "refine.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    with atomic_path(args.out / "refine.md") as tmp:
        tmp.write_text(markdown(doc))
    print(markdown(doc))
    return 0


def markdown(doc):
    lines = ["Whole-image SAD (sum / 1000) on the test set; refine rule chosen on the validation set.", "",
             "| row | transparent | non-transparent | whole |", "|---|---|---|---|"]
    t = doc["teacher_true_trimap"]["whole"]
    for label, s in doc["students"].items():
        r = s["rule"]
        rule = f"low {r['low']}, high {r['high']}, width {r['width']}"
        for name, key in ((f"{label} alone", "student"), (f"{label} -> teacher ({rule})", "refined")):
            lines.append(f"| {name} | " + " | ".join(f"{s['test_whole'][key][g]:.2f}" for g in GROUPS) + " |")
        closed = s["gap_closed_whole"]
        lines.append(f"| {label}: gap closed | " + " | ".join("n/a" if closed[g] is None else f"{100 * closed[g]:.0f}%" for g in GROUPS) + " |")
    lines.append("| teacher, true trimap (upper bound) | " + " | ".join(f"{t[g]:.2f}" for g in GROUPS) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
