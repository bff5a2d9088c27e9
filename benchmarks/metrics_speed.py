"""Throughput and peak memory of `ppid.metrics` on synthetic 8-bit mattes.

    python benchmarks/metrics_speed.py --out results/metrics_speed.json

For each size: images/s of sad, mse, grad, conn alone and of `compute_metrics` (all four sharing
work), whole-image region; peak Python-heap memory of one `compute_metrics` call (tracemalloc,
which sees NumPy buffers); machine info.
"""

import argparse
import json
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy
from scipy import ndimage

from ppid import metrics
from ppid.io import atomic_path


def synthetic_pair(size, seed=0):
    """A soft matte with solid fg/bg and its noisy, blurred estimate (like a network output)."""
    rng = np.random.default_rng(seed)
    base = ndimage.zoom(rng.random((32, 32)), size / 32, order=1)
    gt = np.clip((base - 0.5) * 6 + 0.5, 0, 1)
    pred = np.clip(ndimage.gaussian_filter(gt, 2) + rng.normal(0, 0.03, gt.shape), 0, 1)
    return metrics.as_matte(pred), metrics.as_matte(gt)


def images_per_second(fn, pred, gt, min_seconds, min_repeats=3):
    fn(pred, gt)  # warm-up
    n, start = 0, time.perf_counter()
    while n < min_repeats or time.perf_counter() - start < min_seconds:
        fn(pred, gt)
        n += 1
    return n / (time.perf_counter() - start)


def peak_mib(fn, pred, gt):
    tracemalloc.start()
    fn(pred, gt)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/metrics_speed.json"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timing window per measurement")
    args = parser.parse_args()

    functions = {
        "sad": metrics.sad,
        "mse": metrics.mse,
        "grad": metrics.grad,
        "conn": metrics.conn,
        "all_four": metrics.compute_metrics,
    }
    results = {}
    for size in args.sizes:
        pred, gt = synthetic_pair(size)
        fps = {name: round(images_per_second(fn, pred, gt, args.min_seconds), 3) for name, fn in functions.items()}
        results[f"{size}x{size}"] = {
            "images_per_second": fps,
            "peak_mib_all_four": round(peak_mib(metrics.compute_metrics, pred, gt), 1),
        }
        print(f"{size}x{size}: " + ", ".join(f"{k} {v:.2f} img/s" for k, v in fps.items())
              + f"; peak {results[f'{size}x{size}']['peak_mib_all_four']} MiB")

    report = {
        "command": "python benchmarks/metrics_speed.py --out " + str(args.out),
        "region": "whole",
        "threads": "single process; NumPy/SciPy calls here are single-threaded",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            # The machine may be shared: the load says how much of it this run had.
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "results": results,
    }
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
