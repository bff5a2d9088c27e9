"""How far tiled inference (`Predictor(tile=, overlap=)`) and a lower working resolution
(`max_side`) move the alpha away from running the network on the whole photo.

    python benchmarks/tiling_accuracy.py --model student.safetensors --out results/tiling_accuracy.json

Photos: synthetic composites (`ppid.data.synth` foreground `--indices` over its background, seed 7,
--size W H) with their true alpha. For each photo the whole-photo alpha is the reference; every
other setting reports mean, 99th percentile and max |alpha - reference| and the whole-image SAD
against the true alpha (sum |p - g| / 1000), beside the reference's SAD. Settings: tiles of 1280
(the default), 1024 and 768 px with the default 256 px overlap; 512 px tiles with overlaps 0, 128
and 256 (where more windows make the overlap matter); max_side 1280 (about the network memory of
one 1280 px tile).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ppid
from ppid.data.compose import composite
from ppid.data.synth import make_background, make_foreground
from ppid.io import command_line
from ppid.metrics import sad
from ppid.models import build, save_model

from common import LoadAverage, machine_info, write_result

SETTINGS = {
    "tile1280_overlap256": dict(tile=1280, overlap=256),
    "tile1024_overlap256": dict(tile=1024, overlap=256),
    "tile768_overlap256": dict(tile=768, overlap=256),
    "tile512_overlap0": dict(tile=512, overlap=0),
    "tile512_overlap128": dict(tile=512, overlap=128),
    "tile512_overlap256": dict(tile=512, overlap=256),
    "max_side1280": dict(tile=None, max_side=1280),
}
SEED = 7
N_FG = 8  # backgrounds drawn as for a set of 8 foregrounds (some take their foreground's colours)


def photo(index, width, height):
    fg, alpha, meta = make_foreground(SEED, index, (height, width))
    bg, _ = make_background(SEED, index, (height, width), N_FG)
    return composite(fg, bg, alpha).astype(np.float32), alpha, meta["kind"]


def compare(alpha, reference, truth):
    d = np.abs(alpha - reference)
    return {"mean_abs": round(float(d.mean()), 5), "p99_abs": round(float(np.quantile(d, 0.99)), 4),
            "max_abs": round(float(d.max()), 4), "sad": round(sad(alpha, truth), 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--model", help="student weights (default: an untrained IndexNet student, seed 0)")
    parser.add_argument("--size", type=int, nargs=2, default=(2000, 1500), metavar=("W", "H"))
    parser.add_argument("--indices", type=int, nargs="+", default=[0, 3], help="synth foreground indices (0: hair, 3: smoke)")
    args = parser.parse_args(argv)
    weights = args.model
    if weights is None:
        torch.manual_seed(0)
        weights = Path(args.out).with_suffix(".untrained.safetensors")
        save_model(build("indexnet", "student"), weights)

    load = LoadAverage()
    photos = []
    for index in args.indices:
        image, truth, kind = photo(index, *args.size)
        t0 = time.perf_counter()
        reference = ppid.Predictor(weights, device="cpu", tile=None).predict(image)
        row = {"index": index, "kind": kind, "whole": {"sad": round(sad(reference, truth), 3), "s": round(time.perf_counter() - t0, 1)}}
        for name, kwargs in SETTINGS.items():
            t0 = time.perf_counter()
            alpha = ppid.Predictor(weights, device="cpu", **kwargs).predict(image)
            row[name] = compare(alpha, reference, truth) | {"s": round(time.perf_counter() - t0, 1)}
            print(index, kind, name, row[name], flush=True)
        photos.append(row)
    if args.model is None:
        Path(weights).unlink()

    result = {
        "command": command_line(argv),
        "machine": machine_info() | {"load_average": load.record()},
        "model": args.model or "indexnet student, untrained (seed 0)",
        "photo_size": {"width": args.size[0], "height": args.size[1]},
        "settings": SETTINGS,
        "photos": photos,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
