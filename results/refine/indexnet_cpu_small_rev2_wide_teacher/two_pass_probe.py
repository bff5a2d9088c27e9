"""Validation probe: does a second teacher pass, on a narrow band derived from the first pass's
alpha, beat one pass? (refine, issue 13) A one-off, kept with its output:

    PYTHONPATH=src python results/refine/indexnet_cpu_small_rev2_wide_teacher/two_pass_probe.py baseline/seed0
"""
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "experiments"))
from refine_table import Memoised, sads
from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import evaluate_model
from ppid.models import load_model
from ppid.models.common import MattingOutput, clamp_to_trimap
from ppid.refine import trimap_from_alpha

class TwoPass(torch.nn.Module):
    role = "teacher"
    def __init__(self, teacher, rule2):
        super().__init__(); self.teacher = teacher; self.rule2 = rule2
    def forward(self, image, trimap):
        a1 = clamp_to_trimap(self.teacher(image, trimap).alpha.float(), trimap)
        t2 = trimap_from_alpha(a1, **self.rule2)
        out = self.teacher(image, t2)
        return MattingOutput(alpha=out.alpha, alpha_logits=out.alpha_logits)

R = Path(__file__).resolve().parents[2] / "reproduce/cpu_small"
val = CompositeTestSet(R / "data/val")
dev = torch.device("cpu")
student = Memoised(load_model(R / "runs/indexnet" / sys.argv[1] / "model_best.safetensors", device=dev))
out = {}
for tname, tpath in [("orig", R / "runs/indexnet/teacher/seed0/model_best.safetensors"),
                     ("wide", Path(__file__).resolve().parents[1] / "indexnet_cpu_small_rev2/teacher_wide_bands/model_best.safetensors")]:
    teacher = load_model(tpath, device=dev)
    for rule1 in [{"low": 0.45, "high": 0.55, "width": 0.08}, {"low": 0.25, "high": 0.75, "width": 0.04}]:
        one = sads(evaluate_model(student, val, dev, refiner=teacher, rule=rule1))
        out[f"{tname} one-pass {rule1}"] = one
        print(tname, "one", rule1, one, flush=True)
        for rule2 in [{"low": 0.05, "high": 0.95, "width": 0.01}, {"low": 0.01, "high": 0.99, "width": 0.02}, {"low": 0.05, "high": 0.95, "width": 0.04}]:
            two = sads(evaluate_model(student, val, dev, refiner=TwoPass(teacher, rule2), rule=rule1))
            out[f"{tname} two-pass {rule1} then {rule2}"] = two
            print(tname, "two", rule1, rule2, two, flush=True)
(Path(__file__).parent / f"two_pass_val_{sys.argv[1].replace('/', '_')}.json").write_text(json.dumps(out, indent=1))
