"""How open each model's ALD attention gates are (a diagnostic for collapsed students).

Every family's decoder multiplies its stride-4 and stride-2 features by a spatial attention gate,
sigmoid(logits) (ALD, eq. 5-9). ALD's attention term compares softmax-normalised maps, which do not
see the logits' level, so it does not hold a student's gate open. Per model, over the first
--max-items images of a built set: each gate's mean and largest value, the mean |feature| it gates,
and the predicted alpha's range. Teachers get the set's trimaps. Writes JSON to --out. (DIM's
collapsed PPID student had a shut gate, but a probe showed its head died first: docs/results.md.)

    python experiments/attention_gates.py --model teacher=T.safetensors --model ppid=P.safetensors \
        --data data/val --out gates.json
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import relative_to_folder, write_json
from ppid.io import command_line
from ppid.models import load_model


def gate_stats(model, data, max_items):
    rows = []
    with torch.no_grad():
        for i, item in enumerate(data):
            if i >= max_items:
                break
            image = torch.from_numpy(item["image"]).permute(2, 0, 1)[None]
            trimap = torch.from_numpy(item["trimap"]).float()[None, None] / 255 if model.role == "teacher" else None
            out = model(image, trimap)
            gates = [torch.sigmoid(tap.logits.float()) for tap in out.dec]
            rows.append({"gate_mean": [g.mean().item() for g in gates], "gate_max": [g.max().item() for g in gates],
                         "feature_abs_mean": [tap.feature.abs().mean().item() for tap in out.dec],
                         "alpha_range": (out.alpha.max() - out.alpha.min()).item()})
    return {key: np.mean([r[key] for r in rows], axis=0).round(4).tolist() for key in rows[0]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="LABEL=WEIGHTS")
    p.add_argument("--data", type=Path, required=True, help="a built set (merged/, alpha/, trimaps/)")
    p.add_argument("--max-items", type=int, default=8)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = CompositeTestSet(args.data)
    doc = {"command": command_line(), "data": relative_to_folder(args.data, args.out.parent),
           "images": min(args.max_items, len(data)), "taps": "stride 4, stride 2", "models": {}}
    for spec in args.model:
        label, _, path = spec.partition("=")
        model = load_model(Path(path), device=torch.device("cpu")).eval()
        doc["models"][label] = {"weights": relative_to_folder(Path(path), args.out.parent), **gate_stats(model, data, args.max_items)}
        print(label, doc["models"][label], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
