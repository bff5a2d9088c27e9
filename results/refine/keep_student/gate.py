"""The per-image gates (gate.md): the student's band kept (KEEP 0) where its unsure share is below S
(`--signal unsure`), or where the opaque share of what it calls object is at least S (`--signal opaque`).

Reads the probe's per-image SADs (`probe.py` first), writes `gate_<split>.json` (unsure) or
`gate_opaque_<split>.json`:

    PYTHONPATH=src python results/refine/keep_student/gate.py --split val [--signal opaque]
    PYTHONPATH=src python results/refine/keep_student/gate.py --split test --gate S [--signal opaque]
"""

import argparse
import json
from pathlib import Path

import numpy as np

GRIDS = {"unsure": [0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0],
         "opaque": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 2.0]}
NEVER = {"unsure": 0.0, "opaque": 2.0}  # the S that never keeps the student: today's rule
TEACHER_TRUE_TRIMAP = 2.09  # teacher 2's whole-image test SAD with the true trimap (its result.json)


def kept(row, gate, signal):
    """Whether the gate keeps the student's band on this image."""
    return row["unsure"] < gate if signal == "unsure" else row["opaque"] >= gate


def gated(row, gate, signal):
    return row["keep=0.0"] if kept(row, gate, signal) else row["current"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", choices=("val", "test"), required=True)
    parser.add_argument("--gate", type=float, help="the S chosen on validation (the test split: it and today's rule)")
    parser.add_argument("--signal", choices=tuple(GRIDS), default="unsure")
    args = parser.parse_args()
    if args.split == "test" and args.gate is None:
        parser.error("--split test needs the --gate chosen on validation")
    gates = GRIDS[args.signal] if args.split == "val" else sorted({NEVER[args.signal], args.gate})
    here = Path(__file__).parent
    probe = json.loads((here / f"{args.split}.json").read_text())
    out = {"split": args.split, "signal": args.signal, "gates": gates, "students": []}
    for student in probe["students"]:
        rows = student["per_image"]
        groups = {"whole": rows} | {g: [r for r in rows if r["group"] == g] for g in sorted({r["group"] for r in rows})}
        means = {g: {"alone": float(np.mean([r["alone"] for r in rs]))}
                 | {f"S={s}": float(np.mean([gated(r, s, args.signal) for r in rs])) for s in gates} for g, rs in groups.items()}
        images_kept = {f"S={s}": sum(kept(r, s, args.signal) for r in rows) for s in gates}
        out["students"].append({"student": student["student"], "means": means, "images_kept": images_kept,
                                f"{args.signal}_by_group": {g: [round(r[args.signal], 4) for r in rs] for g, rs in groups.items() if g != "whole"}})
        name = Path(student["student"]).parent
        for g, m in means.items():
            print(f"{name.parent.name + '/' + name.name:>32} {g:>16} " + " ".join(f"{c} {v:.2f}" for c, v in m.items()))
        print(f"{'':>32} images kept: {images_kept}")
    out["mean_whole_over_students"] = {f"S={s}": float(np.mean([st["means"]["whole"][f"S={s}"] for st in out["students"]]))
                                       for s in gates}
    if args.split == "test":
        out["gap_closed_whole"] = {Path(st["student"]).parent.name: {
            c: (st["means"]["whole"]["alone"] - v) / (st["means"]["whole"]["alone"] - TEACHER_TRUE_TRIMAP)
            for c, v in st["means"]["whole"].items() if c != "alone"} for st in out["students"]}
    print("mean whole over students: " + " ".join(f"{c} {v:.3f}" for c, v in out["mean_whole_over_students"].items()))
    path = here / (f"gate_{args.split}.json" if args.signal == "unsure" else f"gate_{args.signal}_{args.split}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
