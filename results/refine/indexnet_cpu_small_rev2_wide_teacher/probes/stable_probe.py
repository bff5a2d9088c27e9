"""Probe (val): per image and band width, refined SAD and how much the matte still changes when the
band grows to the next width: can 'grow until the matte stops changing' pick the width?"""
import json, sys
from pathlib import Path
import numpy as np, torch
from ppid.data.datasets import CompositeTestSet
from ppid.models import load_model
from ppid.refine import trimap_from_alpha
from ppid.models.common import clamp_to_trimap
from ppid.metrics import sad

D = "results/reproduce/cpu_small"
WIDTHS = [0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.16]
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
        with torch.no_grad():
            s = student(image).alpha.float()
            alphas = []
            for w in WIDTHS:
                tri = trimap_from_alpha(s, 0.45, 0.55, w)
                alphas.append(clamp_to_trimap(teacher(image, tri).alpha.float(), tri)[0, 0].numpy())
        snap = (s[0, 0].numpy() >= 0.5).astype(np.float32)
        row = {"group": item["group"], "student": sad(s[0, 0].numpy(), item["alpha"]), "w": {}}
        for i, w in enumerate(WIDTHS):
            a = alphas[i]
            nxt = alphas[i + 1] if i + 1 < len(WIDTHS) else a
            row["w"][str(w)] = {"sad": sad(a, item["alpha"]),
                                "change_next": float(np.abs(a - nxt).mean()),
                                "change_from_snap": float(np.abs(a - snap).mean())}
        rows.append(row)
    out[label] = rows
    print(label, "done", flush=True)
    json.dump(out, open(Path(__file__).with_name(f"stable_probe_{split}.json"), "w"), indent=1)
