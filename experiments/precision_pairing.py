"""The CPU teacher grid's PPID gain, like for like in precision (issue 11; beside the report).

The plan pairs every PPID student with the baseline of its seed. Its baselines and teacher 0's
students trained in bf16 on an early CPU (their result.json has no "precision"); the later
teachers' students trained in float32. This script pairs each student with a baseline of its seed
and of its precision: the plan's own where the precisions agree, else a float32 control baseline
(`ppid train --config results/precision_control/baseline_seedS_float32.json`, then `ppid evaluate
--json`), and leaves out a pair with no such baseline. It prints, and writes as JSON and Markdown,
each teacher's mean difference d_T and the summary over teachers, both ways: the plan's pairing
and like for like.

    python experiments/precision_pairing.py --plan results/reproduce/cpu_small --family indexnet \
        --baseline 0=results/precision_control/baseline_seed0_float32/test.json \
        --baseline 1=results/precision_control/baseline_seed1_float32/test.json \
        --out results/precision_control/teacher_grid_like_for_like
"""

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from ppid.io import command_line
from ppid.reproduce.report import collapsed, over_teachers

STUDENT = re.compile(r"^ppid(?:-teacher(\d+))?$")  # teacher 0's students are the plan's "ppid" row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", type=Path, required=True, help="the reproduce plan's folder")
    p.add_argument("--family", default="indexnet")
    p.add_argument("--baseline", action="append", default=[], metavar="SEED=TEST_JSON",
                   help="a float32 baseline of SEED: `ppid evaluate --json` of its selected weights")
    p.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .md are written)")
    args = p.parse_args()

    runs = load_runs(args.plan / "runs" / args.family)
    controls = {}
    for spec in args.baseline:
        seed, _, path = spec.partition("=")
        summaries = json.loads(Path(path).read_text())["summaries"]
        if len(summaries) != 1:
            raise SystemExit(f"{path}: expected the summary of one model, found {len(summaries)}")
        controls[int(seed)] = {"sad": whole_sad(next(iter(summaries.values()))), "precision": "float32", "source": path}
    doc = {"command": command_line(), "plan": str(args.plan), "family": args.family,
           "plan_pairing": summarise(pairs(runs, {})), "like_for_like": summarise(pairs(runs, controls))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(doc)
    args.out.with_suffix(".md").write_text(md)
    print(md, end="")
    return 0


def whole_sad(summary):
    return summary["results"]["whole"]["all"]["sad"]


def load_runs(folder):
    """{(variant, seed): {"sad", "precision"}} for the finished, healthy runs under runs/FAMILY."""
    runs = {}
    for path in sorted(folder.glob("*/seed*/result.json")):
        result = json.loads(path.read_text())
        if "diverged" in result or collapsed(result):  # left out, as the report does
            continue
        runs[(result["variant"], result["seed"])] = {"sad": whole_sad(result["test"]), "precision": result.get("precision")}
    return runs


def pairs(runs, controls):
    """{teacher: [{seed, student, baseline, precision, d}]}: each PPID student against the baseline of
    its seed, the plan's (controls empty) or, given float32 controls, the one of its precision."""
    out = {}
    for (variant, seed), student in sorted(runs.items(), key=lambda kv: (teacher_of(kv[0][0]) or 0, kv[0][1])):
        teacher = teacher_of(variant)
        base = runs.get(("baseline", seed))
        if teacher is None or base is None:
            continue
        if controls and student["precision"] != base["precision"]:
            base = controls.get(seed) if student["precision"] == "float32" else None
            if base is None:
                continue
        out.setdefault(teacher, []).append({"seed": seed, "student": student["sad"], "baseline": base["sad"],
                                            "precision": [student["precision"] or "not recorded",
                                                          base["precision"] or "not recorded"],
                                            "d": student["sad"] - base["sad"]})
    return out


def teacher_of(variant):
    match = STUDENT.match(variant)
    return None if match is None else int(match.group(1) or 0)


def summarise(by_teacher):
    groups = [[p["d"] for p in ps] for ps in by_teacher.values()]
    return {"teachers": {str(t): {"pairs": ps, "d": statistics.fmean(p["d"] for p in ps)} for t, ps in by_teacher.items()},
            "over_teachers": over_teachers(groups)}


def markdown(doc):
    lines = [f"PPID - baseline, whole-image SAD on the test set ({doc['family']}, `{doc['plan']}`); "
             "a pair is (student precision / baseline precision).", ""]
    for key, title in (("plan_pairing", "The plan's pairing"), ("like_for_like", "Like for like in precision")):
        block = doc[key]
        lines += [f"## {title}", "", "| teacher | pairs: seed (precisions) d | d_T |", "|---|---|---|"]
        for t, row in block["teachers"].items():
            cells = "; ".join(f"{p['seed']} ({p['precision'][0]} / {p['precision'][1]}) {p['d']:+.2f}" for p in row["pairs"])
            lines.append(f"| {t} | {cells} | {row['d']:+.2f} |")
        o = block["over_teachers"]
        if o["teachers"] > 1:
            ci = "" if o["ci95"] is None else f", 95% CI {o['ci95'][0]:+.2f} to {o['ci95'][1]:+.2f}"
            parts = "" if o["between_std"] is None else (f"; within a teacher {o['within_std']:.2f} ({o['within_df']} df), "
                                                         f"between teachers {o['between_std']:.2f}")
            lines += ["", f"Over {o['teachers']} teachers: mean {o['mean']:+.2f} (std {o['std']:.2f}{ci}); "
                      f"pairs won {o['pairs_won']}/{o['pairs']}{parts}."]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
