"""Peak memory of `ppid predict` on one large photo, and what tiling does to its alpha.

    git archive d01da85 src | tar -x -C /tmp/before      # the code before tiling, for "before"
    nice -n 19 python benchmarks/predict_memory.py --before-src /tmp/before/src --out results/predict_memory.json

The photo is synthetic (smooth random colour fields plus fine noise, --size W H, JPEG); the model
an untrained IndexNet student (seed 0, saved with ppid.models.save_model): weights do not change
the memory. Every run is `ppid predict --model M photo.jpg --out DIR --save alpha,rgba,composite
--device cpu` in its own process; its peak RSS is the child's ru_maxrss from os.wait4. Runs:
- before: the code at --before-src (it ran every photo whole);
- whole: this code with --tile 0 (whole photo at once);
- default: this code with its default tiles.
Each alpha is compared with the whole-photo alpha (of this code, else of the code before: the
network computes the same values), 8-bit PNGs, |difference| in [0, 1].
A whole 12-megapixel photo needs 10-15 GB: run it once, alone, on a machine with room for it.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import ppid
from ppid.io import command_line, read_alpha
from ppid.models import build, save_model

from common import LoadAverage, machine_info, write_result

RUNS = ("before", "whole", "default")
THIS_SRC = Path(ppid.__file__).resolve().parents[1]


def synthetic_photo(path, width, height, seed=0):
    """Smooth colour fields (bicubic from a 40x30 grid) plus pixel noise, as a JPEG."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    noise = rng.normal(0, 8, (height, width, 3)).astype(np.float32)
    Image.fromarray(np.clip(np.asarray(coarse, np.float32) + noise, 0, 255).astype(np.uint8)).save(path, quality=95)


def measure(src, weights, photo, out, extra):
    """(peak RSS bytes, wall seconds) of one `ppid predict` process run with `src` first on the path."""
    command = [sys.executable, "-m", "ppid", "predict", "--model", str(weights), str(photo), "--out", str(out),
               "--save", "alpha,rgba,composite", "--device", "cpu", *extra]
    env = dict(os.environ, PYTHONPATH=str(src))
    t0 = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {child.returncode}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return usage.ru_maxrss * scale, wall


def alpha_difference(alpha, reference):
    d = np.abs(alpha - reference)
    return {"mean_abs": round(float(d.mean()), 5), "p99_abs": round(float(np.quantile(d, 0.99)), 4),
            "max_abs": round(float(d.max()), 4), "pixels_over_0.05": round(float((d > 0.05).mean()), 5)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--size", type=int, nargs=2, default=(4000, 3000), metavar=("W", "H"))
    parser.add_argument("--before-src", type=Path, help="`src` folder of the code to measure as 'before'")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    args = parser.parse_args(argv)
    if "before" in args.runs and args.before_src is None:
        parser.error("the 'before' run needs --before-src")

    load = LoadAverage()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        save_model(build("indexnet", "student"), tmp / "student.safetensors")
        synthetic_photo(tmp / "photo.jpg", *args.size)
        for name in args.runs:
            src, extra = (args.before_src, []) if name == "before" else (THIS_SRC, ["--tile", "0"] if name == "whole" else [])
            peak, wall = measure(src, tmp / "student.safetensors", tmp / "photo.jpg", tmp / name, extra)
            rows[name] = {"src": str(src), "extra_args": extra, "peak_rss_gb": round(peak / 1e9, 2),
                          "peak_rss_gib": round(peak / 2**30, 2), "wall_s": round(wall, 1)}
            print(f"{name}: peak RSS {peak / 1e9:.2f} GB, {wall:.0f} s", flush=True)
        # this code's whole-photo alpha, else the old code's (the network's values did not change)
        reference = next((name for name in ("whole", "before") if name in rows), None)
        if reference:
            ref = read_alpha(tmp / reference / "alpha" / "photo.png")
            for name in rows:
                rows[name][f"alpha_vs_{reference}"] = alpha_difference(read_alpha(tmp / name / "alpha" / "photo.png"), ref)

    result = {
        "command": command_line(argv),
        "machine": machine_info() | {"load_average": load.record()},
        "photo": {"width": args.size[0], "height": args.size[1], "megapixels": round(args.size[0] * args.size[1] / 1e6, 2),
                  "kind": "synthetic JPEG (smooth colour fields + noise)"},
        "model": "indexnet student, untrained (seed 0)",
        "predict_args": "--save alpha,rgba,composite --device cpu",
        "runs": rows,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
