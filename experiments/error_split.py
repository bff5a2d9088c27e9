"""Where a model's whole-image SAD comes from: the share of it on true background (alpha <= 0.01),
true foreground (alpha >= 0.99) and the pixels between, its mean prediction on true background, and
the largest alpha it predicts (for a teacher: in the trimap's unknown band, before clamping).

Written to diagnose IndexNet revision 1 (models/indexnet.py), whose head could not predict alpha
above ~0.53 in flat regions; it reads any ppid model on a built test set.

    python experiments/error_split.py --model LABEL=M.safetensors [--model ...] --data data/test --out split.json
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import predict_testset, relative_to_folder
from ppid.io import atomic_path, command_line
from ppid.metrics import as_matte
from ppid.models import load_model

BACKGROUND, FOREGROUND = 0.01, 0.99


def error_split(model, testset):
    sad = {"background": 0.0, "foreground": 0.0, "between": 0.0}
    background_pred, largest = [], 0.0
    for _, alpha, gt, trimap, _ in predict_testset(model, testset, torch.device("cpu")):
        # a teacher's alpha is clamped to its trimap: its largest own value is in the unknown band
        own = alpha if model.role == "student" else alpha[trimap == 128]
        largest = max(largest, float(own.max())) if own.size else largest
        pred = as_matte(alpha).astype(np.float64) / 255  # the benchmark's 8-bit matte
        gt = as_matte(gt).astype(np.float64) / 255
        error = np.abs(pred - gt) / 1000  # SAD units
        background, foreground = gt <= BACKGROUND, gt >= FOREGROUND
        sad["background"] += error[background].sum()
        sad["foreground"] += error[foreground].sum()
        sad["between"] += error[~background & ~foreground].sum()
        background_pred.append(pred[background].mean())
    total = sum(sad.values())
    return {
        "sad": total / len(testset),
        "share": {k: v / total for k, v in sad.items()},
        "background_mean_prediction": float(np.mean(background_pred)),
        "largest_alpha": largest,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=WEIGHTS")
    parser.add_argument("--data", type=Path, required=True, help="a built test set")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    testset = CompositeTestSet(args.data)
    where = args.out.parent
    doc = {"command": command_line(argv), "data": relative_to_folder(args.data, where), "models": {}}
    for spec in args.model:
        label, _, path = spec.partition("=")
        row = error_split(load_model(path), testset)
        doc["models"][label] = {"weights": relative_to_folder(path, where), **row}
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in row["share"].items())
        print(f"{label}: SAD {row['sad']:.2f} ({shares}); background mean {row['background_mean_prediction']:.3f}; "
              f"largest alpha {row['largest_alpha']:.3f}", flush=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
