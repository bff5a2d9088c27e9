"""Refine mode measured (issue 13): student alone, student -> teacher, teacher with the true trimap.

The refine rule (ppid.refine.trimap_from_alpha: LOW < alpha < HIGH grown by WIDTH x the shorter
side) is chosen on the validation set, by whole-image SAD of student -> teacher, per student; the
test set is then read once with that rule. A control row separates the teacher's contribution from
the rule's: the student's own alpha clamped to the trimap derived from it (0 / 1 outside the band,
no teacher), its rule also chosen on the validation set. Writes refine.json and refine.md into --out.

    python experiments/refine_table.py --teacher T.safetensors --student baseline=B.safetensors \
        --student ppid=P.safetensors --val data/val --test data/test --out results/refine/x
"""

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import evaluate_model, gap_closed, relative_to_folder
from ppid.io import atomic_path, command_line
from ppid.models import load_model
from ppid.models.common import MattingOutput
from ppid.refine import HIGH, LOW, WIDTH

THRESHOLDS = [(0.01, 0.99), (LOW, HIGH), (0.15, 0.85), (0.25, 0.75), (0.35, 0.65), (0.45, 0.55)]
WIDTHS = [0.0, WIDTH, 0.02, 0.04, 0.08, 0.12]  # 0.0: one pixel (the rule's minimum)
GROUPS = ("transparent", "non-transparent", "all")


class Memoised(torch.nn.Module):
    """A student that predicts each image once: no rule changes the student's alpha, so the sweep
    (rules x refine and control) pays for the teacher and the metrics only."""

    def __init__(self, student):
        super().__init__()
        self.student = student
        self.role = student.role
        self.cache = {}

    def forward(self, image, trimap=None):
        key = hashlib.sha1(image.detach().cpu().float().numpy().tobytes()).hexdigest()
        if key not in self.cache:  # alpha only: the taps would hold every feature map
            out = self.student(image, trimap)
            self.cache[key] = MattingOutput(alpha=out.alpha, alpha_logits=out.alpha_logits)
        return self.cache[key]


class OwnAlpha(torch.nn.Module):
    """The control's "refiner": the student itself, ignoring the trimap, so that refine() only
    clamps the student's alpha to the trimap derived from it."""

    role = "teacher"

    def __init__(self, student):
        super().__init__()
        self.student = student

    def forward(self, image, trimap):
        return self.student(image)


def choose_rule(student, refiner, val, device, label):
    """(chosen rule, sweep): the rule with the lowest validation whole-image SAD."""
    sweep = []
    for (low, high), width in itertools.product(THRESHOLDS, WIDTHS):
        rule = {"low": low, "high": high, "width": width}
        sad = sads(evaluate_model(student, val, device, refiner=refiner, rule=rule))["all"]
        sweep.append({"rule": rule, "val_sad": sad})
        print(f"{label}: val rule {rule}: SAD {sad:.3f}", flush=True)
    return min(sweep, key=lambda r: r["val_sad"])["rule"], sweep


def sads(summary, region="whole"):
    return {g: summary["results"][region][g]["sad"] for g in GROUPS if g in summary["results"][region]}


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
        "command": command_line(),
        "teacher": relative_to_folder(args.teacher, args.out),
        "val": relative_to_folder(args.val, args.out),
        "test": relative_to_folder(args.test, args.out),
        "selection": "rule with the lowest validation whole-image SAD of student -> teacher",
        "teacher_true_trimap": {"whole": sads(teacher_test), "transition": sads(teacher_test, "transition")},
        "students": {},
    }
    for spec in args.student:
        label, _, path = spec.partition("=")
        student = Memoised(load_model(Path(path), device=device))
        chosen, sweep = choose_rule(student, teacher, val, device, label)
        control_rule, control_sweep = choose_rule(student, OwnAlpha(student), val, device, f"{label} (control)")
        alone = evaluate_model(student, test, device)
        refined = evaluate_model(student, test, device, refiner=teacher, rule=chosen)
        control = evaluate_model(student, test, device, refiner=OwnAlpha(student), rule=control_rule)
        rows = {"student": sads(alone), "refined": sads(refined), "clamped_only": sads(control),
                "teacher": doc["teacher_true_trimap"]["whole"]}
        doc["students"][label] = {
            "weights": relative_to_folder(Path(path), args.out),
            "val_sweep": sweep,
            "rule": chosen,
            "control_val_sweep": control_sweep,
            "control_rule": control_rule,
            "val_student_alone": sads(evaluate_model(student, val, device))["all"],
            "test_whole": rows,
            "test_transition": {"student": sads(alone, "transition"), "refined": sads(refined, "transition"),
                                "clamped_only": sads(control, "transition")},
            "gap_closed_whole": {
                key: {g: gap_closed(rows["student"][g], rows[key][g], rows["teacher"][g]) for g in GROUPS}
                for key in ("refined", "clamped_only")
            },
        }
    doc["wall_s"] = round(time.time() - started, 1)
    write_report(args.out, "refine", doc, markdown(doc))
    return 0


def write_report(out, name, doc, table):
    """out/NAME.json (doc) and out/NAME.md (table), each written atomically; the table also printed."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    with atomic_path(out / f"{name}.md") as tmp:
        tmp.write_text(table)
    print(table)


def rule_text(r):
    return f"low {r['low']}, high {r['high']}, width {r['width']}"


def markdown(doc):
    """The table: each student alone, clamped only (control), refined, and the gap closed by both."""
    lines = ["Whole-image SAD (sum / 1000) on the test set; each rule chosen on the validation set.", "",
             "| row | transparent | non-transparent | whole |", "|---|---|---|---|"]

    def row(name, values, fmt):
        lines.append(f"| {name} | " + " | ".join(fmt(values[g]) for g in GROUPS) + " |")

    for label, s in doc["students"].items():
        row(f"{label} alone", s["test_whole"]["student"], "{:.2f}".format)
        row(f"{label} clamped to its own derived trimap, no teacher ({rule_text(s['control_rule'])})",
            s["test_whole"]["clamped_only"], "{:.2f}".format)
        row(f"{label} -> teacher ({rule_text(s['rule'])})", s["test_whole"]["refined"], "{:.2f}".format)
        for key, what in (("clamped_only", "clamping alone"), ("refined", "refine")):
            row(f"{label}: student-teacher gap closed by {what}", s["gap_closed_whole"][key],
                lambda v: "n/a" if v is None else f"{100 * v:.0f}%")
    row("teacher, true trimap (upper bound)", doc["teacher_true_trimap"]["whole"], "{:.2f}".format)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
