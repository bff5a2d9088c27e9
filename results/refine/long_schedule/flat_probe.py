"""Which refined mattes are flat, and why (README: the flat-matte warning).

For each test composite: the 6000-iteration baseline's largest alpha, the derived trimap's
foreground and band pixels, whether the refined matte is flat (`evaluate.is_flat`), and whole-image
SAD alone, refined and for an empty matte. Counts by group.

    PYTHONPATH=src python results/refine/long_schedule/flat_probe.py
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import is_flat
from ppid.metrics import sad
from ppid.models import load_model
from ppid.refine import refine

ROOT = Path(__file__).resolve().parents[3]
STUDENT = "results/long_schedule/baseline_seed0_6000/model_best.safetensors"
TEACHER = "results/reproduce/cpu_small/runs/indexnet/teacher/seed2/model_best.safetensors"
RULE = {"low": 0.45, "high": 0.55, "width": "auto", "auto_scale": 0.15}


def main():
    student, teacher = load_model(ROOT / STUDENT).eval(), load_model(ROOT / TEACHER).eval()
    rows = []
    with torch.no_grad():
        for item in CompositeTestSet(ROOT / "results/reproduce/cpu_small/data/test"):
            image = torch.from_numpy(item["image"]).permute(2, 0, 1)[None]
            refined, trimap, alone = (t[0, 0].numpy() for t in refine(student, teacher, image, **RULE))
            gt = item["alpha"]
            rows.append({"name": item["name"], "group": item["group"], "student_max_alpha": float(alone.max()),
                         "trimap_foreground_px": int((trimap == 1).sum()), "trimap_band_px": int((trimap == 0.5).sum()),
                         "refined_flat": bool(is_flat(refined)), "sad_alone": sad(alone, gt),
                         "sad_refined": sad(refined, gt), "sad_empty": sad(np.zeros_like(gt), gt)})
    flat = [r for r in rows if r["refined_flat"]]
    out = {
        "student": STUDENT, "teacher": TEACHER, "rule": RULE, "images": len(rows),
        "flat_by_group": dict(Counter(r["group"] for r in flat)),
        "flat_with_student_below_low": sum(r["student_max_alpha"] <= RULE["low"] for r in flat),
        "flat_with_no_foreground_and_no_band": sum(r["trimap_foreground_px"] + r["trimap_band_px"] == 0 for r in flat),
        "flat_mean_sad": {k: float(np.mean([r[k] for r in flat])) if flat else None
                          for k in ("sad_alone", "sad_refined", "sad_empty")},
        "per_image": rows,
    }
    path = Path(__file__).with_name("flat_probe.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print({k: v for k, v in out.items() if k != "per_image"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
