"""Probe (validation only): which per-image signal tells refine's band width? Per student (with its
own teacher) and validation image: the refined SAD at each band width of a grid (rule 0.45/0.55),
the student's soft share (what width "auto" uses) and the teacher's soft share after one pass at a
fixed band (0.08): does the teacher, which sees the band, tell translucent content from the
student's haze better? Writes signal_probe_val.json beside this file; summarise_signals.py reads it.

    OMP_NUM_THREADS=1 python results/refine/indexnet_cpu_small_teacher_seeds/probes/signal_probe.py
"""
import json
from pathlib import Path

import torch

from ppid.data.datasets import CompositeTestSet
from ppid.metrics import sad
from ppid.models import load_model
from ppid.models.common import clamp_to_trimap
from ppid.refine import trimap_from_alpha

R = "results/reproduce/cpu_small/runs/indexnet"
PAIRS = {"ppid-teacher2_seed2": ("ppid-teacher2/seed2", "teacher/seed2"),
         "ppid-teacher2_seed0": ("ppid-teacher2/seed0", "teacher/seed2"),
         "ppid-teacher3_seed0": ("ppid-teacher3/seed0", "teacher/seed3")}
WIDTHS = [0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.16, 0.20]
PROBE_WIDTH = 0.08


def soft_share(alpha):
    return float(((alpha > 0.05) & (alpha < 0.95)).float().mean())


def main():
    torch.set_num_threads(1)
    data = CompositeTestSet("results/reproduce/cpu_small/data/val")
    out = {}
    for label, (student_dir, teacher_dir) in PAIRS.items():
        student = load_model(f"{R}/{student_dir}/model_best.safetensors", device="cpu").eval()
        teacher = load_model(f"{R}/{teacher_dir}/model_best.safetensors", device="cpu").eval()
        rows = []
        for item in data:
            image = torch.from_numpy(item["image"]).permute(2, 0, 1)[None]
            with torch.inference_mode():
                s = student(image).alpha.float()
                refined = {}
                for w in WIDTHS:
                    tri = trimap_from_alpha(s, 0.45, 0.55, w)
                    refined[w] = clamp_to_trimap(teacher(image, tri).alpha.float(), tri)
            probe = refined[PROBE_WIDTH]
            band = trimap_from_alpha(s, 0.45, 0.55, PROBE_WIDTH) == 0.5
            rows.append({"name": item["name"], "group": item["group"],
                         "student": sad(s[0, 0].numpy(), item["alpha"]),
                         "student_soft": soft_share(s), "teacher_soft": soft_share(probe),
                         "teacher_soft_in_band": float(((probe > 0.05) & (probe < 0.95) & band).float().sum() / band.float().sum().clamp(min=1)),
                         "band_share": float(band.float().mean()),
                         "refined": {str(w): sad(a[0, 0].numpy(), item["alpha"]) for w, a in refined.items()}})
        out[label] = rows
        print(label, "done", flush=True)
    Path(__file__).with_name("signal_probe_val.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
