"""Refine keeping the student where it is decisive: whole-image SAD per KEEP (README).

One pass of the student and one of the teacher per composite; each KEEP combines them afterwards:
inside the derived band the student's alpha where |2 alpha - 1| >= KEEP, the teacher's elsewhere;
outside the band the derived trimap (0 / 1). "current" is today's refine output exactly. Each
image's `unsure` (`refine.unsure_share`, the automatic band width's signal) and
`opaque` (`opaque_share`) are kept for the per-image gates (gate.md, gate.py).

    PYTHONPATH=src python results/refine/keep_student/probe.py --split val
    PYTHONPATH=src python results/refine/keep_student/probe.py --split test --keep K
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ppid.data.datasets import CompositeTestSet
from ppid.metrics import sad
from ppid.models import load_model
from ppid.refine import HIGH, refine, unsure_share

ROOT = Path(__file__).resolve().parents[3]
TEACHER = "results/reproduce/cpu_small/runs/indexnet/teacher/seed2/model_best.safetensors"
STUDENTS = ["results/long_schedule/baseline_seed0_6000/model_best.safetensors",
            "results/reproduce/cpu_small/runs/indexnet/ppid-teacher2/seed2/model_best.safetensors",
            "results/reproduce/cpu_small/runs/indexnet/ppid-teacher2/seed0/model_best.safetensors"]
RULE = {"low": 0.45, "high": 0.55, "width": "auto", "auto_scale": 0.15}
GRID = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0]


def keep_student(refined, trimap, alone, keep):
    """Today's refined matte with the student's alpha kept in the band where it is decisive."""
    decisive = (trimap == 0.5) & (np.abs(2 * alone - 1) >= keep)
    return np.where(decisive, alone, refined)


def opaque_share(alone):
    """The share of what the student calls object (alpha > 0.5) that it makes opaque (>= HIGH); 0
    where it calls nothing object."""
    found = alone > 0.5
    return float((alone >= HIGH).sum() / found.sum()) if found.any() else 0.0


def probe(student_path, teacher, data, keeps):
    student = load_model(ROOT / student_path).eval()
    rows = []
    with torch.no_grad():
        for item in data:
            image = torch.from_numpy(item["image"]).permute(2, 0, 1)[None]
            refined, trimap, alone = refine(student, teacher, image, **RULE)
            unsure = float(unsure_share(alone)[0])
            refined, trimap, alone = (t[0, 0].numpy() for t in (refined, trimap, alone))
            gt = item["alpha"]
            row = {"name": item["name"], "group": item["group"], "unsure": unsure,
                   "opaque": opaque_share(alone), "alone": sad(alone, gt), "current": sad(refined, gt)}
            row.update({f"keep={k}": sad(keep_student(refined, trimap, alone, k), gt) for k in keeps})
            rows.append(row)
    columns = [c for c in rows[0] if c not in ("name", "group", "unsure", "opaque")]
    groups = {"whole": rows}
    for g in sorted({r["group"] for r in rows}):
        groups[g] = [r for r in rows if r["group"] == g]
    means = {g: {c: float(np.mean([r[c] for r in rs])) for c in columns} | {"images": len(rs)} for g, rs in groups.items()}
    return {"student": student_path, "means": means, "per_image": rows}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", choices=("val", "test"), required=True)
    parser.add_argument("--keep", type=float, help="the KEEP chosen on validation (the test split: it and 1)")
    args = parser.parse_args()
    if args.split == "test" and args.keep is None:
        parser.error("--split test needs the --keep chosen on validation")
    keeps = GRID if args.split == "val" else sorted({args.keep, 1.0})
    torch.set_num_threads(1)
    data = CompositeTestSet(ROOT / "results/reproduce/cpu_small/data" / args.split)
    teacher = load_model(ROOT / TEACHER).eval()
    out = {"split": args.split, "teacher": TEACHER, "rule": RULE, "keeps": keeps,
           "students": [probe(s, teacher, data, keeps) for s in STUDENTS]}
    columns = ["alone", "current"] + [f"keep={k}" for k in keeps]
    mean_whole = {c: float(np.mean([s["means"]["whole"][c] for s in out["students"]])) for c in columns}
    out["mean_whole_over_students"] = mean_whole
    path = Path(__file__).with_name(f"{args.split}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    for s in out["students"]:
        for g, m in s["means"].items():
            print(f"{Path(s['student']).parent.name:>22} {g:>16} ({m['images']:3d}) " + " ".join(f"{c} {m[c]:.2f}" for c in columns))
    print("mean whole over students: " + " ".join(f"{c} {v:.3f}" for c, v in mean_whole.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
