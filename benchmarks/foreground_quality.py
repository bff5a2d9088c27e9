"""Foreground colour estimation: error on synthetic composites with known F, and speed at 1080p.

    python benchmarks/foreground_quality.py --out results/foreground_quality.json
    python benchmarks/foreground_quality.py --device cuda --out results/gpu/foreground_quality_cuda.json

Three seeded `ppid.data.synth` sets (seeds 7, 23, 11; --n-fg foregrounds each at 512x512, written
exactly as `ppid data synth` writes them). Foreground i is composited over background i
(I = aF + (1 - a)B, quantised to 8 bits like a photo) and its F estimated from I and the 8-bit
alpha by:
  - pymatting: pymatting's `estimate_foreground_ml` (the reference);
  - ppid: `ppid.foreground.estimate_foreground` on NumPy arrays (what `ppid predict` runs on a CPU);
  - ppid_torch: `ppid.foreground.estimate_foreground_torch` on --device (what it runs on a GPU);
  - naive: F = I, the error left when nothing is estimated.
Error per image = `foreground_error`: mean over pixels with 0.05 < alpha < 0.95 of
alpha * |F_est - F| (channel mean); per group (transparent / non-transparent / all) the mean
over its images.

Speed: one 1920x1080 synth foreground (hair) over its background, median of --repeats after a
warm-up call, the methods interleaved so machine load hits them alike. The first call of a fresh
process (pymatting's import, which loads or compiles its Numba code, plus the first run) is timed
separately in subprocesses, with the machine's Numba cache and with an empty one.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ppid.data.synth import make_background, make_foreground, synthesize
from ppid.foreground import estimate_foreground, estimate_foreground_torch, foreground_error
from ppid.io import command_line, read_alpha, read_image

from common import LoadAverage, machine_info, write_result

SEEDS = (7, 23, 11)
GROUPS = ("transparent", "non-transparent", "all")


def quantise(x):
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0


def composite(fg, bg, alpha):
    a = alpha[..., None]
    return quantise(a * fg + (1.0 - a) * bg)


def load_set(seed, n_fg, size, folder):
    """[(name, group, image, fg, alpha)] for one seeded synth set written into `folder`."""
    manifest = synthesize(folder, n_fg, seed=seed, size=(size, size))
    samples = []
    for i, entry in enumerate(manifest["samples"]):
        fg = read_image(folder / "fg" / f"{entry['name']}.png")
        alpha = read_alpha(folder / "alpha" / f"{entry['name']}.png")
        bg = read_image(folder / "bg" / f"{manifest['backgrounds'][i]['name']}.png")
        samples.append((entry["name"], entry["group"], composite(fg, bg, alpha), fg, alpha))
    return samples


def methods(names, device):
    """{name: estimate(image, alpha) -> fg} for the requested method names."""
    def torch_estimate(image, alpha):
        image_t = torch.from_numpy(image).permute(2, 0, 1)[None].to(device)
        alpha_t = torch.from_numpy(alpha)[None, None].to(device)
        fg = estimate_foreground_torch(image_t, alpha_t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return fg[0].permute(1, 2, 0).cpu().numpy()

    def pymatting_estimate(image, alpha):
        from pymatting import estimate_foreground_ml

        return estimate_foreground_ml(image, alpha)

    every = {
        "pymatting": pymatting_estimate,
        "ppid": estimate_foreground,
        "ppid_torch": torch_estimate,
        "naive": lambda image, alpha: image,
    }
    unknown = set(names) - set(every)
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(sorted(unknown))} (choose from {', '.join(every)})")
    return {name: every[name] for name in names}


def group_means(per_image):
    """{group: mean error} from [(group, error)]."""
    out = {}
    for group in GROUPS:
        errors = [e for g, e in per_image if group in ("all", g)]
        out[group] = round(float(np.mean(errors)), 5) if errors else None
    return out


def quality(estimators, n_fg, size):
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            samples = load_set(seed, n_fg, size, Path(tmp) / f"seed{seed}")
            per_method = {name: [] for name in estimators}
            for _, group, image, fg_true, alpha in samples:
                for name, estimate in estimators.items():
                    per_method[name].append((group, foreground_error(estimate(image, alpha), fg_true, alpha)))
            results[f"seed{seed}"] = {name: group_means(errors) for name, errors in per_method.items()}
            groups = [group for _, group, *_ in samples]
            results[f"seed{seed}"]["n_images"] = {g: sum(g in ("all", gr) for gr in groups) for g in GROUPS}
    return results


def hd_scene():
    """A 1920x1080 hair foreground (synth kind 0) over its background, as (image, alpha)."""
    size = (1080, 1920)
    fg, alpha, _ = make_foreground(0, 0, size)
    bg, _ = make_background(0, 0, size, n_fg=1)
    return composite(fg, bg, quantise(alpha)), quantise(alpha)


def speed(estimators, repeats):
    image, alpha = hd_scene()
    timed = {name: estimate for name, estimate in estimators.items() if name != "naive"}
    for estimate in timed.values():
        estimate(image, alpha)  # warm-up: JIT / allocator
    times = {name: [] for name in timed}
    for _ in range(repeats):
        for name, estimate in timed.items():
            start = time.perf_counter()
            estimate(image, alpha)
            times[name].append(time.perf_counter() - start)
    return {name: {"s_median": round(statistics.median(t), 4), "s_all": [round(x, 4) for x in t]}
            for name, t in times.items()}


_FIRST_CALL = """
import time, numpy as np
start = time.perf_counter()
from pymatting import estimate_foreground_ml
imported = time.perf_counter()
rng = np.random.default_rng(0)
estimate_foreground_ml(rng.random((64, 64, 3)), rng.random((64, 64)))
print(imported - start, time.perf_counter() - imported)
"""


def first_call():
    """pymatting in fresh processes: import and first call (64x64), seconds, with Numba's cache as
    this machine has it (warm unless pymatting was never used here) and with an empty cache (what
    the first use after `pip install` costs: Numba compiles every pymatting kernel at import)."""
    result = {}
    with tempfile.TemporaryDirectory() as empty_cache:
        environments = {
            "machine_cache": os.environ,
            "empty_cache": {**os.environ, "NUMBA_CACHE_DIR": empty_cache},
        }
        for cache, env in environments.items():
            command = [sys.executable, "-c", _FIRST_CALL]
            out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            import_s, call_s = (float(v) for v in out.stdout.split())
            result[cache] = {"import_s": round(import_s, 2), "first_call_s": round(call_s, 3)}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of ppid_torch")
    parser.add_argument("--n-fg", type=int, default=24, help="foregrounds per seeded set (default 24)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs at 1920x1080")
    parser.add_argument("--methods", default="pymatting,ppid,ppid_torch,naive",
                        help="comma-separated subset of pymatting,ppid,ppid_torch,naive (default all)")
    parser.add_argument("--out", type=Path, help="JSON file to write (printed either way)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)

    estimators = methods(args.methods.split(","), device)
    load = LoadAverage()
    uses_pymatting = {"pymatting", "ppid"} & set(estimators)
    result = {
        "pymatting_fresh_process": first_call() if uses_pymatting else None,
        "error": quality(estimators, args.n_fg, args.size),
        "speed_1920x1080": speed(estimators, args.repeats),
        "metric": "per image: mean over 0.05 < alpha < 0.95 of alpha * |F_est - F| (channel mean); "
                  "per group: mean over its images",
        "ppid_torch_device": args.device,
        "machine": machine_info(device) | {"load_average": load.record()},
        "command": command_line(argv),
    }
    print(json.dumps(result, indent=2))
    print(table(result))
    if args.out:
        write_result(args.out, result)
    return 0


def table(result):
    """Markdown table of the errors: one row per seed and method, columns per group."""
    lines = ["| set | method | " + " | ".join(GROUPS) + " |", "|---|---|" + "---|" * len(GROUPS)]
    for seed, by_method in result["error"].items():
        for method, errors in by_method.items():
            if method != "n_images":
                cells = " | ".join("n/a" if errors[g] is None else f"{errors[g]:.4f}" for g in GROUPS)  # a group may be empty
                lines.append(f"| {seed} | {method} | {cells} |")
    for method, s in result["speed_1920x1080"].items():
        lines.append(f"| 1920x1080 | {method} | {s['s_median']:.3f} s (median) | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
