"""Probe (val): per image, refined SAD at each band width (rule 0.45/0.55, wide teacher), the snapped
student, and the student's share of uncertain pixels: is an adaptive width worth having?"""
import json, sys
from pathlib import Path
import numpy as np, torch
from ppid.data.datasets import CompositeTestSet
from ppid.models import load_model
from ppid.refine import trimap_from_alpha
from ppid.models.common import clamp_to_trimap
from ppid.metrics import as_matte

D = "results/reproduce/cpu_small"
WIDTHS = [0.0, 0.01, 0.02, 0.04, 0.08, 0.12, 0.16]
teacher = load_model("results/refine/indexnet_cpu_small_rev2/teacher_wide_bands/model_best.safetensors", device="cpu").eval()
split = sys.argv[1]
data = CompositeTestSet(f"{D}/data/{split}")
torch.set_num_threads(1)
out = {}
for label in sys.argv[2:]:
    variant, seed = label.split("_")
    student = load_model(f"{D}/runs/indexnet/{variant}/seed{seed}/model_best.safetensors", device="cpu").eval()
    rows = []
    for item in data:
        image = torch.from_numpy(item["image"]).permute(2, 0, 1)[None]
        gt = item["alpha"].astype(np.float64)
        sad = lambda a: float(np.abs(as_matte(a) / 255.0 - as_matte(gt) / 255.0).sum() / 1000)
        with torch.no_grad():
            s = student(image).alpha.float()
            row = {"name": item["name"], "group": item["group"], "student": sad(s[0, 0].numpy()),
                   "snap": sad((s[0, 0].numpy() >= 0.5).astype(np.float32)),
                   "uncertain": {f"{lo}": float(((s > lo) & (s < 1 - lo)).float().mean()) for lo in (0.05, 0.15, 0.25)},
                   "refined": {}}
            for w in WIDTHS:
                tri = trimap_from_alpha(s, 0.45, 0.55, w)
                row["refined"][str(w)] = sad(clamp_to_trimap(teacher(image, tri).alpha.float(), tri)[0, 0].numpy())
        rows.append(row)
    out[label] = rows
    print(label, "done", flush=True)
json.dump(out, open(Path(__file__).with_name(f"width_probe_{split}.json"), "w"), indent=1)
