"""Mean alpha on true background and whole-image SAD, on whole training composites and on the test set
(README: the question and the rule).

    ppid data build-testset --fg results/reproduce/cpu_small/data/train/fg \
      --alpha results/reproduce/cpu_small/data/train/alpha --bg results/reproduce/cpu_small/data/train/bg \
      --fg-list results/haze_source/train_fg_list.txt --per-fg 2 --out /tmp/haze_source_train
    PYTHONPATH=src python results/haze_source/haze_source_probe.py /tmp/haze_source_train
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import empty_matte_summary, predict_testset
from ppid.metrics import sad
from ppid.models import load_model

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "baseline seed 1 float32": "results/precision_control/baseline_seed1_float32/model_best.safetensors",
    "baseline seed 2 float32": "results/precision_control/baseline_seed2_float32/model_best.safetensors",
    "ppid-teacher2 seed 2": "results/reproduce/cpu_small/runs/indexnet/ppid-teacher2/seed2/model_best.safetensors",
}


def summary(model, dataset, floor):
    """Means over images: whole-image SAD and the mean alpha on true background; `floor` is the set's
    empty-matte SAD, carried beside them."""
    rows = []
    for _, pred, gt, _, _ in predict_testset(model, dataset, torch.device("cpu")):
        rows.append([sad(pred, gt), float(pred[gt == 0].mean())])
    sad_mean, bg_alpha = np.mean(rows, axis=0).tolist()
    return {"sad": sad_mean, "empty_matte_sad": floor, "mean_alpha_on_background": bg_alpha, "images": len(rows)}


def verdict(b_train, b_test):
    if b_train >= 0.75 * b_test:
        return "shift"
    return "generalisation" if b_train <= 0.5 * b_test else "both"


def main(train_set):
    sets = {"train composites": CompositeTestSet(Path(train_set)),
            "test": CompositeTestSet(ROOT / "results/reproduce/cpu_small/data/test")}
    floors = {name: empty_matte_summary(ds)["results"]["whole"]["all"]["sad"] for name, ds in sets.items()}
    out = {"train_set": "60 training foregrounds x 2 training backgrounds (README)", "models": {}}
    for label, weights in MODELS.items():
        model = load_model(ROOT / weights)
        row = {name: summary(model, ds, floors[name]) for name, ds in sets.items()}
        row["weights"] = weights
        row["verdict"] = verdict(row["train composites"]["mean_alpha_on_background"], row["test"]["mean_alpha_on_background"])
        out["models"][label] = row
        print(label, {k: {m: round(v, 3) for m, v in r.items()} for k, r in row.items() if isinstance(r, dict)}, row["verdict"], flush=True)
    baselines = {r["verdict"] for k, r in out["models"].items() if k.startswith("baseline")}
    out["verdict"] = baselines.pop() if len(baselines) == 1 else "mixed"
    print("verdict (baselines):", out["verdict"])
    path = Path(__file__).with_name("haze_source.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
