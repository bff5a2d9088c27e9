"""Validation probe (README, lead 1): refine mode started from the teacher's own matte without a
trimap, beside the teacher's PPID students refined by it with the same rule.

    PYTHONPATH=src python results/teacher_trimap_reliance/self_refine_probe.py val 2 3 4 5
    PYTHONPATH=src python results/teacher_trimap_reliance/self_refine_probe.py test 2 3 4 5   # once, after validation
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ppid.data.datasets import CompositeTestSet
from ppid.metrics import sad
from ppid.models import load_model
from ppid.refine import parse_rule, refine

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "results/reproduce/cpu_small/runs/indexnet"
RULE = parse_rule(("0.45", "0.55", "auto:0.15"))


class WithoutTrimap(torch.nn.Module):
    """A teacher as a trimap-free model: its trimap is unknown everywhere."""

    role = "student"

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, image, trimap=None):
        return self.teacher(image, torch.full_like(image[:, :1], 0.5))


def refined_sad(start, teacher, dataset):
    sums = {}
    with torch.no_grad():
        for item in dataset:
            image = torch.from_numpy(item["image"]).permute(2, 0, 1)[None]
            alpha = refine(start, teacher, image, **RULE)[0][0, 0].numpy()
            for g in (item["group"], "all"):
                sums.setdefault(g, []).append(sad(alpha, item["alpha"]))
    return {g: float(np.mean(v)) for g, v in sums.items()}


def main(split, teachers):
    dataset = CompositeTestSet(ROOT / f"results/reproduce/cpu_small/data/{split}")
    out = {"rule": RULE, "teachers": {}}
    for t in teachers:
        teacher = load_model(RUNS / f"teacher/seed{t}/model_best.safetensors").eval()
        rows = {"teacher itself": refined_sad(WithoutTrimap(teacher), teacher, dataset)}
        for student in sorted((RUNS / f"ppid-teacher{t}").glob("seed*/model_best.safetensors")):
            rows[f"ppid-teacher{t} {student.parent.name}"] = refined_sad(load_model(student).eval(), teacher, dataset)
        out["teachers"][t] = rows
        for label, row in rows.items():
            print(f"teacher {t}, start {label}: " + ", ".join(f"{g} {v:.2f}" for g, v in row.items()), flush=True)
    path = Path(__file__).with_name(f"self_refine_probe_{split}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1], [int(t) for t in sys.argv[2:]])
