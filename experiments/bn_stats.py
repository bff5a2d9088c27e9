"""Does a model's BatchNorm carry the training crops' statistics to full images? Each model is
evaluated on a built set twice: with BatchNorm's running statistics (the protocol: every number in
the reports), and with each image's own statistics (BatchNorm in training mode, batch of one; the
running statistics stay as they are). A large difference says the features' statistics on full
images differ from those on the training crops (the students train on 128 px crops centred on the
unknown band, and are evaluated on whole 256 px composites, mostly background).

With --tile T --overlap O, a third evaluation runs each model (running statistics) in windows of
T px (ppid.predict.tile_windows), e.g. 128: the training crops' scale, with less context.

With --recalibrate TRAIN_ROOT, another evaluation runs each model with running statistics
recomputed on whole training composites, as `ppid recalibrate` does (ppid/recalibrate.py): the
first N training foregrounds of TRAIN_ROOT, each on the background of the same index, at their
full size, in batches of 8. No weight changes, and no validation or test image is used:
population statistics at the test images' scale, where the protocol's come from training crops.

A diagnostic, on the validation split; it changes no model and no reported number.

    python experiments/bn_stats.py --model LABEL=M.safetensors [--model ...] --data data/val --out bn.json \
        [--tile 128 --overlap 64] [--recalibrate data/train --recalibrate-images 64]
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import evaluate_model, relative_to_folder
from ppid.io import atomic_path, command_line
from ppid.models import load_model
from ppid.models.common import MattingOutput
from ppid.predict import check_tiling, tiled_alpha
from ppid.recalibrate import recalibrate_batchnorm, whole_composites


@contextlib.contextmanager
def per_image_statistics(model):
    """Within the block, every BatchNorm of the model normalises by the current image's statistics,
    except where its input is a single value per channel (a pooled branch), which keeps the running
    statistics; those stay untouched, and the model is back in eval mode after."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    hooks = [bn.register_forward_pre_hook(_batch_stats_if_spatial) for bn in norms]
    for bn in norms:
        bn.momentum = 0.0  # training mode would otherwise move the running statistics
    try:
        yield model
    finally:
        for bn, momentum, hook in zip(norms, momenta, hooks):
            bn.momentum = momentum
            hook.remove()
        model.eval()


def _batch_stats_if_spatial(bn, inputs):
    bn.training = inputs[0][0, 0].numel() > 1


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@contextlib.contextmanager
def recalibrated_statistics(model, batches):
    """Within the block, every BatchNorm's running statistics are recomputed on `batches`
    (`ppid recalibrate`'s procedure); the model's own statistics come back after."""
    saved = {k: v.clone() for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in BN_BUFFERS}
    try:
        recalibrate_batchnorm(model, batches)
        yield model
    finally:  # also when a forward above fails
        model.load_state_dict(saved, strict=False)


class Tiled(torch.nn.Module):
    """The model run window by window, as `Predictor(tile=, overlap=)` runs large photos."""

    def __init__(self, model, tile, overlap):
        super().__init__()
        self.model, self.tile, self.overlap = model, tile, overlap
        self.role = model.role

    def forward(self, image, trimap=None):
        return MattingOutput(alpha=tiled_alpha(self.model, image, trimap, self.tile, self.overlap), alpha_logits=None)


def sads(summary):
    """Whole-image SAD per group, and the transition region's under "transition" when scored."""
    results = summary["results"]
    row = {g: round(v["sad"], 4) for g, v in results["whole"].items()}
    if "transition" in results:
        row["transition"] = {g: round(v["sad"], 4) for g, v in results["transition"].items()}
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=WEIGHTS")
    parser.add_argument("--data", type=Path, required=True, help="a built set (the validation split)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--tile", type=int, help="also evaluate in windows of this many px")
    parser.add_argument("--overlap", type=int, default=64, help="with --tile: the windows' overlap in px")
    parser.add_argument("--recalibrate", type=Path, metavar="TRAIN_ROOT",
                        help="also evaluate with BatchNorm statistics recomputed on whole training composites")
    parser.add_argument("--recalibrate-images", type=int, default=64, help="with --recalibrate: how many")
    parser.add_argument("--no-per-image", action="store_true", help="skip the per-image statistics evaluation")
    args = parser.parse_args(argv)
    if args.tile is not None:
        check_tiling(args.tile, args.overlap)
    batches = whole_composites(args.recalibrate, args.recalibrate_images) if args.recalibrate else None
    data, device, where = CompositeTestSet(args.data), torch.device("cpu"), args.out.parent
    doc = {"command": command_line(argv), "data": relative_to_folder(args.data, where), "metric": "whole-image SAD per group (the transition region's under 'transition' where the set has trimaps)",
           "models": {}}
    for spec in args.model:
        label, _, path = spec.partition("=")
        model = load_model(path, device=device)
        row = {"weights": relative_to_folder(path, where), "running_stats": sads(evaluate_model(model, data, device))}
        if not args.no_per_image:
            with per_image_statistics(model):
                row["per_image_stats"] = sads(evaluate_model(model, data, device))
        if args.tile is not None:
            row[f"tiled_{args.tile}_overlap_{args.overlap}"] = sads(evaluate_model(Tiled(model, args.tile, args.overlap), data, device))
        if batches is not None:
            with recalibrated_statistics(model, batches):
                row[f"recalibrated_{args.recalibrate_images}_whole_training_images"] = sads(evaluate_model(model, data, device))
        doc["models"][label] = row
        print(f"{label}: " + " | ".join(f"{k} {v}" for k, v in row.items() if k != "weights"), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
