"""Does a model's BatchNorm carry the training crops' statistics to full images? Each model is
evaluated on a built set twice: with BatchNorm's running statistics (the protocol: every number in
the reports), and with each image's own statistics (BatchNorm in training mode, batch of one; the
running statistics stay as they are). A large difference says the features' statistics on full
images differ from those on the training crops (the students train on 128 px crops centred on the
unknown band, and are evaluated on whole 256 px composites, mostly background).

A diagnostic, on the validation split; it changes no model and no reported number.

    python experiments/bn_stats.py --model LABEL=M.safetensors [--model ...] --data data/val --out bn.json
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import evaluate_model, relative_to_folder
from ppid.io import atomic_path, command_line
from ppid.models import load_model


class PerImageStats(torch.nn.Module):
    """The model with every BatchNorm normalising by the current image's statistics, except where
    its input is a single value per channel (a pooled branch), which keeps the running statistics."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.role = model.role
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
            bn.momentum = 0.0  # training mode would otherwise move the running statistics
            bn.register_forward_pre_hook(_batch_stats_if_spatial)

    def forward(self, image, trimap=None):
        return self.model(image, trimap)


def _batch_stats_if_spatial(bn, inputs):
    bn.training = inputs[0][0, 0].numel() > 1


def sads(summary):
    return {g: round(v["sad"], 4) for g, v in summary["results"]["whole"].items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=WEIGHTS")
    parser.add_argument("--data", type=Path, required=True, help="a built set (the validation split)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    data, device, where = CompositeTestSet(args.data), torch.device("cpu"), args.out.parent
    doc = {"command": command_line(argv), "data": relative_to_folder(args.data, where), "metric": "whole-image SAD",
           "models": {}}
    for spec in args.model:
        label, _, path = spec.partition("=")
        model = load_model(path, device=device)
        running = sads(evaluate_model(model, data, device))
        per_image = sads(evaluate_model(PerImageStats(model), data, device))
        doc["models"][label] = {"weights": relative_to_folder(path, where), "running_stats": running,
                                "per_image_stats": per_image}
        print(f"{label}: running statistics {running} | per-image statistics {per_image}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
