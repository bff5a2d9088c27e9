"""Whole-image SAD of each model with alpha below t set to 0 (README: the rule).

    PYTHONPATH=src python results/haze_clip/haze_clip_probe.py val
    PYTHONPATH=src python results/haze_clip/haze_clip_probe.py test T
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import predict_testset
from ppid.metrics import sad
from ppid.models import load_model

ROOT = Path(__file__).resolve().parents[2]
RUNS = "results/reproduce/cpu_small/runs/indexnet"
MODELS = {
    "baseline seed 1 float32": "results/precision_control/baseline_seed1_float32/model_best.safetensors",
    "baseline seed 2 float32": "results/precision_control/baseline_seed2_float32/model_best.safetensors",
    "ppid-teacher2 seed 2": f"{RUNS}/ppid-teacher2/seed2/model_best.safetensors",
    "ppid-teacher2 seed 0": f"{RUNS}/ppid-teacher2/seed0/model_best.safetensors",
    "ppid-teacher3 seed 0": f"{RUNS}/ppid-teacher3/seed0/model_best.safetensors",
    "ppid-teacher4 seed 1": f"{RUNS}/ppid-teacher4/seed1/model_best.safetensors",
    "ppid-teacher5 seed 2": f"{RUNS}/ppid-teacher5/seed2/model_best.safetensors",
}
PAIRS = {"ppid-teacher2 seed 2": "baseline seed 2 float32", "ppid-teacher5 seed 2": "baseline seed 2 float32",
         "ppid-teacher4 seed 1": "baseline seed 1 float32"}
THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def clipped_sad(pred, gt, t):
    """Whole-image SAD of the prediction with alpha < t set to 0."""
    return sad(np.where(pred < t, 0.0, pred), gt)


def sads(weights, dataset, thresholds):
    per_group = {}
    for _, pred, gt, _, group in predict_testset(load_model(ROOT / weights), dataset, torch.device("cpu")):
        for g in (group, "all"):
            per_group.setdefault(g, []).append([clipped_sad(pred, gt, t) for t in thresholds])
    return {g: dict(zip(map(str, thresholds), np.mean(rows, axis=0).tolist())) for g, rows in per_group.items()}


def main(split, threshold=None):
    thresholds = THRESHOLDS if threshold is None else (0.0, float(threshold))
    dataset = CompositeTestSet(ROOT / f"results/reproduce/cpu_small/data/{split}")
    out = {"split": split, "thresholds": list(thresholds), "models": {}}
    for label, weights in MODELS.items():
        out["models"][label] = {"weights": weights, "sad": sads(weights, dataset, thresholds)}
        print(label, {t: round(v, 2) for t, v in out["models"][label]["sad"]["all"].items()}, flush=True)
    mean = {str(t): float(np.mean([m["sad"]["all"][str(t)] for m in out["models"].values()])) for t in thresholds}
    out["mean_over_models"] = mean
    print("mean over models:", {t: round(v, 2) for t, v in mean.items()})
    if split == "test":
        out["pairs"] = {f"{s} - {b}": {t: out["models"][s]["sad"]["all"][t] - out["models"][b]["sad"]["all"][t] for t in mean}
                        for s, b in PAIRS.items()}
        for name, d in out["pairs"].items():
            print(name, {t: round(v, 2) for t, v in d.items()})
    path = Path(__file__).with_name(f"haze_clip_{split}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
