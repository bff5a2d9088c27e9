"""Speed of `ppid.metrics` against a plain NumPy/SciPy port of the DIM MATLAB code, and throughput.

    nice -n 19 python benchmarks/metrics_speed.py --out results/metrics_speed.json
    nice -n 19 python benchmarks/metrics_speed.py --profile --repeats 10   # where the time goes

1. Versus the plain port: seeded 1024x1024 cases (a soft object, a prediction with errors, a
   trimap whose unknown band is about 10% of the image). Per repeat, every case is timed with
   both implementations, their order alternating from case to case; per-image time = median over
   repeats of the total / number of cases. Reported per metric alone and for all four together,
   for the whole image and for the transition region, with the ratio plain / ours and the largest
   relative difference between the two implementations' values.
2. Throughput: images/s of sad, mse, grad, conn alone and of `compute_metrics` (whole image) at
   each --sizes, and the peak Python-heap memory of one `compute_metrics` call (tracemalloc,
   which sees NumPy buffers).
Compare timings only within one run: the machine may be shared (the JSON records its load).
"""

import argparse
import cProfile
import pstats
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy
from scipy import ndimage

from ppid import metrics
from ppid.io import command_line

from common import LoadAverage, machine_info, write_result

NAMES = (*metrics.METRICS, "all_four")


def realistic_case(size, seed):
    """(pred, gt, trimap) uint8: a wobbly object with a soft, noisy boundary, a blurred estimate
    with smooth errors around the boundary, and a trimap unknown band (~10% of the image)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    angle, radius = np.arctan2(yy, xx), np.hypot(yy, xx)
    k = np.arange(2, 7)[:, None, None]
    wobble = (rng.uniform(0.02, 0.08, (5, 1, 1)) * np.cos(k * angle + rng.uniform(0, 6.3, (5, 1, 1)))).sum(0)
    inside = radius < 0.3 * (1 + wobble)
    dist = ndimage.distance_transform_edt(inside) - ndimage.distance_transform_edt(~inside)
    width = size / 100  # of the soft boundary
    hair = ndimage.gaussian_filter(rng.random((size, size)), 1.0)
    ramp = np.exp(-np.abs(dist) / width)
    gt = np.clip(0.5 + dist / (2 * width) + 0.3 * (hair - hair.mean()) / hair.std() * ramp, 0, 1)
    blotch = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 64)
    pred = ndimage.gaussian_filter(gt, 1.5) + 0.4 * blotch / np.abs(blotch).max() * np.exp(-np.abs(dist) / (4 * width))
    pred += rng.normal(0, 0.02, gt.shape) * (ramp > 0.05)
    p8, g8 = metrics.as_matte(np.clip(pred, 0, 1)), metrics.as_matte(gt)
    band = ndimage.binary_dilation((g8 > 0) & (g8 < 255), iterations=size // 64)
    trimap = np.where(g8 >= 128, 255, 0).astype(np.uint8)
    trimap[band] = 128
    return p8, g8, trimap


# --- The plain port: each MATLAB function transcribed directly (float64, 2-D filters, one
# --- connected-component labelling per Conn threshold), the baseline the speed-up is measured by.

def plain_port_mask(trimap, region):
    return np.ones(trimap.shape, bool) if region == "whole" else trimap == 128


def plain_port_sad(pred, gt, trimap, region):
    mask = plain_port_mask(trimap, region)
    return np.abs(pred / 255.0 - gt / 255.0)[mask].sum() / 1000


def plain_port_mse(pred, gt, trimap, region):
    mask = plain_port_mask(trimap, region)
    return ((pred / 255.0 - gt / 255.0) ** 2)[mask].sum() / mask.sum()


def plain_port_gaussgradient(img, sigma=1.4):
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * 0.01))))
    u = np.arange(-half, half + 1)
    gauss = np.exp(-(u**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    hx = np.outer(gauss, -u * gauss / sigma**2)
    hx /= np.sqrt((hx**2).sum())
    return ndimage.convolve(img, hx, mode="nearest"), ndimage.convolve(img, hx.T, mode="nearest")


def plain_port_grad(pred, gt, trimap, region):
    mask = plain_port_mask(trimap, region)
    amplitudes = []
    for a in (pred, gt):
        img = (a - float(a.min())) / max(float(a.max()) - float(a.min()), 1.0)  # mat2gray
        gx, gy = plain_port_gaussgradient(img)
        amplitudes.append(np.sqrt(gx**2 + gy**2).astype(np.float32))
    return ((amplitudes[0] - amplitudes[1]) ** 2)[mask].sum(dtype=np.float64) / 1000


def plain_port_conn(pred, gt, trimap, region, step=0.1):
    mask = plain_port_mask(trimap, region)
    p, g = pred.astype(np.float32) / np.float32(255), gt.astype(np.float32) / np.float32(255)
    thresholds = np.arange(0, 1 + step, step)
    l_map = np.full(p.shape, -1.0, np.float32)
    for i in range(1, len(thresholds)):
        # bwconncomp numbers components in column-major order: label the transposed mask.
        labels, n = ndimage.label(((p >= thresholds[i]) & (g >= thresholds[i])).T)
        labels = labels.T
        sizes = np.bincount(labels.ravel())[1:]
        omega = labels == np.argmax(sizes) + 1 if n else np.zeros(p.shape, bool)
        l_map[(l_map == -1) & ~omega] = thresholds[i - 1]
    l_map[l_map == -1] = 1
    d_p, d_g = p - l_map, g - l_map
    phi_p, phi_g = 1 - d_p * (d_p >= 0.15), 1 - d_g * (d_g >= 0.15)
    return np.abs(phi_p - phi_g)[mask].sum(dtype=np.float64) / 1000


def plain_port_all(pred, gt, trimap, region):
    return {"sad": plain_port_sad(pred, gt, trimap, region), "mse": plain_port_mse(pred, gt, trimap, region),
            "grad": plain_port_grad(pred, gt, trimap, region), "conn": plain_port_conn(pred, gt, trimap, region)}


IMPLEMENTATIONS = {
    "plain_port": {"sad": plain_port_sad, "mse": plain_port_mse, "grad": plain_port_grad,
                   "conn": plain_port_conn, "all_four": plain_port_all},
    "ppid": {"sad": metrics.sad, "mse": metrics.mse, "grad": metrics.grad, "conn": metrics.conn,
             "all_four": metrics.compute_metrics},
}


def seconds(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def versus_plain_port(cases, repeats):
    """{region: {name: {plain_port_ms, ppid_ms, ratio}}} per image, and the values' largest
    relative difference per metric."""
    totals = {(impl, region, name): [] for impl in IMPLEMENTATIONS for region in metrics.REGIONS for name in NAMES}
    for _ in range(repeats):
        run = dict.fromkeys(totals, 0.0)
        for i, case in enumerate(cases):
            order = list(IMPLEMENTATIONS) if i % 2 == 0 else list(IMPLEMENTATIONS)[::-1]
            for region in metrics.REGIONS:
                for name in NAMES:
                    for impl in order:
                        run[impl, region, name] += seconds(IMPLEMENTATIONS[impl][name], *case, region)
        for key, value in run.items():
            totals[key].append(value)
    per_image_ms = {key: 1000 * float(np.median(value)) / len(cases) for key, value in totals.items()}
    timings = {
        region: {
            name: {
                "plain_port_ms": round(per_image_ms["plain_port", region, name], 2),
                "ppid_ms": round(per_image_ms["ppid", region, name], 2),
                "ratio": round(per_image_ms["plain_port", region, name] / per_image_ms["ppid", region, name], 2),
            }
            for name in NAMES
        }
        for region in metrics.REGIONS
    }
    return timings, largest_relative_difference(cases)


def largest_relative_difference(cases):
    worst = {region: dict.fromkeys(metrics.METRICS, 0.0) for region in metrics.REGIONS}
    for case in cases:
        for region in metrics.REGIONS:
            ours, plain = metrics.compute_metrics(*case, region), plain_port_all(*case, region)
            for name in metrics.METRICS:
                diff = abs(ours[name] - plain[name]) / max(abs(plain[name]), 1e-12)
                worst[region][name] = max(worst[region][name], float(diff))
    return worst


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


def throughput(sizes, min_seconds):
    results = {}
    for size in sizes:
        pred, gt, _ = realistic_case(size, seed=0)
        fps = {name: round(images_per_second(IMPLEMENTATIONS["ppid"][name], pred, gt, min_seconds), 3) for name in NAMES}
        results[f"{size}x{size}"] = {
            "images_per_second": fps,
            "peak_mib_all_four": round(peak_mib(metrics.compute_metrics, pred, gt), 1),
        }
        print(f"{size}x{size}: " + ", ".join(f"{k} {v:.2f} img/s" for k, v in fps.items())
              + f"; peak {results[f'{size}x{size}']['peak_mib_all_four']} MiB")
    return results


def profile(size, repeats, top=12):
    """cProfile of `metrics_by_region` (both regions) on the first case: where the time goes."""
    pred, gt, trimap = realistic_case(size, seed=0)
    metrics.metrics_by_region(pred, gt, trimap, metrics.REGIONS)  # warm-up
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [metrics.metrics_by_region(pred, gt, trimap, metrics.REGIONS) for _ in range(repeats)])
    print(f"{repeats} calls of metrics_by_region(both regions) at {size}x{size}, by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def print_comparison(timings, worst):
    for region, rows in timings.items():
        print(f"{region}: per image, plain port ms / ppid ms = ratio")
        for name, row in rows.items():
            diff = f"  (values differ by <= {worst[region][name]:.1e} relative)" if name in worst[region] else ""
            print(f"  {name:>8}: {row['plain_port_ms']:8.1f} / {row['ppid_ms']:7.1f} = {row['ratio']:5.2f}x{diff}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/metrics_speed.json"))
    parser.add_argument("--cases", type=int, default=48, help="seeded cases compared with the plain port")
    parser.add_argument("--case-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048], help="throughput sizes")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="throughput timing window")
    parser.add_argument("--profile", action="store_true", help="only print a cProfile of the first case and exit")
    args = parser.parse_args()
    if args.profile:
        return profile(args.case_size, args.repeats)

    load = LoadAverage()
    cases = [realistic_case(args.case_size, seed) for seed in range(args.cases)]
    unknown = float(np.mean([(trimap == 128).mean() for _, _, trimap in cases]))
    timings, worst = versus_plain_port(cases, args.repeats)
    print_comparison(timings, worst)
    results = throughput(args.sizes, args.min_seconds)
    report = {
        "command": command_line(),
        "versus_plain_port": {
            "cases": args.cases,
            "size": f"{args.case_size}x{args.case_size}",
            "unknown_fraction_mean": round(unknown, 4),
            "repeats": args.repeats,
            "per_image": timings,
            "largest_relative_value_difference": worst,
        },
        "region": "whole (throughput)",
        "threads": "single process; NumPy/SciPy calls here are single-threaded",
        "machine": machine_info(numpy=np.__version__, scipy=scipy.__version__) | {"load_average": load.record()},
        "results": results,
    }
    write_result(args.out, report)


if __name__ == "__main__":
    main()
