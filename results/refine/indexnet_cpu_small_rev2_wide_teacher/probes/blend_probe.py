"""Probe (val): inside the refine band, which alpha is best: teacher, snapped student, raw student,
blends; split the band into its core (student uncertain, grown 1%) and the outer ring."""
import json, sys
from pathlib import Path
import numpy as np, torch
from ppid.data.datasets import CompositeTestSet
from ppid.models import load_model
from ppid.refine import trimap_from_alpha
from ppid.metrics import as_matte

D = "results/reproduce/cpu_small"
teacher = load_model("results/refine/indexnet_cpu_small_rev2/teacher_wide_bands/model_best.safetensors", device="cpu").eval()
val = CompositeTestSet(f"{D}/data/val")
out = {}
torch.set_num_threads(1)
for label in sys.argv[1:]:
    variant, seed = label.split("_")
    student = load_model(f"{D}/runs/indexnet/{variant}/seed{seed}/model_best.safetensors", device="cpu").eval()
    res = {}
    for low, high, width in [(0.45, 0.55, 0.04), (0.45, 0.55, 0.08), (0.45, 0.55, 0.12), (0.15, 0.85, 0.08)]:
        acc = {}
        for item in val:
            image = torch.from_numpy(item["image"]).permute(2, 0, 1)[None]
            gt = as_matte(item["alpha"]).astype(np.float64)
            with torch.no_grad():
                s = student(image).alpha.float()
                tri = trimap_from_alpha(s, low, high, width)
                core = trimap_from_alpha(s, low, high, 0.01) == 0.5
                t = teacher(image, tri).alpha.float()
            band = (tri == 0.5)[0, 0].numpy(); core = core[0, 0].numpy() & band; ring = band & ~core
            s = s[0, 0].numpy(); t = t[0, 0].numpy(); snap = (s >= 0.5).astype(np.float32)
            outside = tri[0, 0].numpy()
            cands = {"teacher": t, "snap": snap, "student": s, "avg_t_snap": (t + snap) / 2, "avg_t_student": (t + s) / 2,
                     "t_core_snap_ring": np.where(core, t, snap), "t_core_avg_ring": np.where(core, t, (t + snap) / 2)}
            for name, c in cands.items():
                a = np.where(band, c, outside)
                err = np.abs(as_matte(a).astype(np.float64) - gt) / 1000
                g = item["group"]
                for key in (name, f"{name}|{g}"):
                    e = acc.setdefault(key, [0.0, 0.0, 0.0, 0])
                    e[0] += err.sum(); e[1] += err[core].sum(); e[2] += err[ring].sum(); e[3] += 1
        res[f"{low}/{high}/{width}"] = {k: {"sad": v[0] / v[3], "core": v[1] / v[3], "ring": v[2] / v[3]} for k, v in acc.items()}
        print(label, low, high, width, {k: round(v[0] / v[3], 2) for k, v in acc.items() if "|" not in k}, flush=True)
        print("   non-transparent", {k.split('|')[0]: round(v[0] / v[3], 2) for k, v in acc.items() if k.endswith("|non-transparent")}, flush=True)
    out[label] = res
json.dump(out, open(Path(__file__).with_name("blend_probe_val.json"), "w"), indent=1)
