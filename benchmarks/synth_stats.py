"""Does the synthetic benchmark let sharpness alone tell foreground from background? And its speed.

    python benchmarks/synth_stats.py --photos PHOTO... --out results/synth_stats.json

For each benchmark version it writes a set with `ppid.data.synth.synthesize` (timed: the versions
alternate, median of --repeats runs) and measures, on foreground i over background i:

- fg_colour_std: standard deviation of the foreground colour over its transition band
  (0.05 < alpha < 0.95), averaged over RGB. A flat foreground there is a give-away.
- bg_sharp_edges: the share of background pixels on a sharp edge (a luminance gradient above
  EDGE_STEP between neighbours; sensor grain rarely makes one). Photos have plenty.
- sharp_edges_outside_over_band: the share of sharp-edge pixels of the composite where alpha = 0
  divided by that share in the transition band. Near 0, sharp edges occur only where the
  foreground is, so sharpness finds it.
- laplacian_bg_over_fg: mean |Laplacian| of the background over the transition band divided by
  that of the foreground over the same pixels (high-frequency energy; grain counts too).

Each statistic is reported per sample and as the median over samples (overall and per kind).
--photos measures bg_sharp_edges and the mean |Laplacian| of real photos for reference.
"""

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ppid.data.synth import VERSIONS, synthesize
from ppid.io import command_line, read_alpha, read_image

from common import LoadAverage, machine_info, write_result

BAND = (0.05, 0.95)
EDGE_STEP = 0.1  # a luminance step between neighbours this large is a sharp edge; grain rarely makes one
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def laplacian_magnitude(image):
    """|4-neighbour Laplacian| of an HxWx3 float image (edges replicated), averaged over channels."""
    pad = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    lap = pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:] - 4 * image
    return np.abs(lap).mean(-1)


def sharp_edges(image):
    """HxW bool: pixels whose luminance differs from the next pixel right or down by a gradient of
    magnitude > EDGE_STEP."""
    lum = image @ LUMA
    dx, dy = np.zeros_like(lum), np.zeros_like(lum)
    dx[:, :-1], dy[:-1] = np.diff(lum, axis=1), np.diff(lum, axis=0)
    return np.hypot(dx, dy) > EDGE_STEP


def sample_stats(fg, bg, alpha):
    """The statistics of one foreground (HxWx3), its background (HxWx3) and alpha (HxW); None when
    alpha has no transition band."""
    band = (alpha > BAND[0]) & (alpha < BAND[1])
    outside = alpha == 0
    if not band.any() or not outside.any():
        return None
    composite = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    edges = sharp_edges(composite)
    lap_fg, lap_bg = laplacian_magnitude(fg)[band].mean(), laplacian_magnitude(bg)[band].mean()
    return {
        "fg_colour_std": float(fg[band].std(0).mean()),
        "bg_sharp_edges": float(sharp_edges(bg).mean()),
        "composite_sharp_edges_outside": float(edges[outside].mean()),
        "composite_sharp_edges_band": float(edges[band].mean()),
        "sharp_edges_outside_over_band": float(edges[outside].mean() / max(edges[band].mean(), 1e-6)),
        "laplacian_fg": float(lap_fg),
        "laplacian_bg": float(lap_bg),
        "laplacian_bg_over_fg": float(lap_bg / max(lap_fg, 1e-6)),
    }


def photo_stats(path, size):
    """The background statistics of a real photo, scaled to cover size x size and centre-cropped."""
    photo = Image.open(path).convert("RGB")
    scale = size / min(photo.size)
    photo = photo.resize((max(size, round(photo.width * scale)), max(size, round(photo.height * scale))), Image.LANCZOS)
    left, top = (photo.width - size) // 2, (photo.height - size) // 2
    img = np.asarray(photo.crop((left, top, left + size, top + size)), np.float32) / 255
    return {"photo": str(path), "bg_sharp_edges": round(float(sharp_edges(img).mean()), 4), "laplacian": round(float(laplacian_magnitude(img).mean()), 4)}


def dataset_stats(root, manifest):
    """Per-sample statistics of a written synth folder and their medians (overall and per kind)."""
    root = Path(root)
    per_sample = {}
    for i, sample in enumerate(manifest["samples"]):
        name = sample["name"]
        bg_name = manifest["backgrounds"][i % len(manifest["backgrounds"])]["name"]
        fg, alpha = read_image(root / "fg" / f"{name}.png"), read_alpha(root / "alpha" / f"{name}.png")
        stats = sample_stats(fg, read_image(root / "bg" / f"{bg_name}.png"), alpha)
        if stats is not None:
            per_sample[name] = {"kind": sample["kind"], **stats}
    keys = next(iter(per_sample.values())).keys() - {"kind"}

    def medians(rows):
        return {k: round(statistics.median(r[k] for r in rows), 4) for k in sorted(keys)}

    kinds = sorted({r["kind"] for r in per_sample.values()})
    return {
        "median": medians(list(per_sample.values())),
        "median_by_kind": {k: medians([r for r in per_sample.values() if r["kind"] == k]) for k in kinds},
        "per_sample": {n: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for n, r in per_sample.items()},
    }


def cpu_seconds():
    """CPU time of this process and of its finished children (the synth worker processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-fg", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per version, alternating versions")
    parser.add_argument("--versions", type=int, nargs="+", default=list(VERSIONS), choices=VERSIONS)
    parser.add_argument("--photos", type=Path, nargs="*", default=[], help="real photos to measure as a reference")
    parser.add_argument("--out", type=Path, help="JSON file to write (printed either way)")
    args = parser.parse_args(argv)

    load = LoadAverage()
    seconds = {v: [] for v in args.versions}
    cpu = {v: [] for v in args.versions}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for version in args.versions:
                out = Path(tmp) / f"v{version}"
                start, start_cpu = time.perf_counter(), cpu_seconds()
                synthesize(out, args.n_fg, seed=args.seed, size=(args.size, args.size), workers=args.workers, version=version)
                seconds[version].append(time.perf_counter() - start)
                cpu[version].append(cpu_seconds() - start_cpu)
        for version in args.versions:
            manifest = json.loads((Path(tmp) / f"v{version}" / "manifest.json").read_text())
            results[f"v{version}"] = {
                "seconds_median": round(statistics.median(seconds[version]), 2),
                "seconds_all": [round(s, 2) for s in seconds[version]],
                "cpu_seconds_median": round(statistics.median(cpu[version]), 2),  # less sensitive to load
                "cpu_seconds_all": [round(s, 2) for s in cpu[version]],
                **dataset_stats(Path(tmp) / f"v{version}", manifest),
            }
    first, last = f"v{args.versions[0]}", f"v{args.versions[-1]}"
    result = {
        "n_fg": args.n_fg,
        "size": [args.size, args.size],
        "seed": args.seed,
        "workers": args.workers,
        "machine": machine_info() | {"load_average": load.record()},
        "time_ratio": round(results[last]["seconds_median"] / results[first]["seconds_median"], 2),
        "cpu_time_ratio": round(results[last]["cpu_seconds_median"] / results[first]["cpu_seconds_median"], 2),
        "time_ratio_of": f"{last} / {first}",
        "reference_photos": [photo_stats(p, args.size) for p in args.photos],
        "versions": results,
        "command": command_line(argv),
    }
    summary = {v: {"seconds": r["seconds_median"], "cpu_seconds": r["cpu_seconds_median"], **r["median"]} for v, r in results.items()}
    print(json.dumps({k: v for k, v in result.items() if k != "versions"} | summary, indent=1))
    if args.out:
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
