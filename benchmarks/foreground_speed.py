"""Foreground colour estimation: accuracy against naive F = I, and speed at 1080p.

    python benchmarks/foreground_speed.py --device cpu  --out results/foreground_speed_cpu.json
    python benchmarks/foreground_speed.py --device cuda --out results/foreground_speed_cuda.json

The scene is a synthetic composite with known F, B and alpha: a solid core with hair-like strands,
a semi-transparent "glass" panel attached to the core, textured colours on both sides. Accuracy is
`transition_error` (alpha-weighted mean |F - F_true| over 0 < alpha < 1) for the naive estimate
(F = I) and for blur-fusion, over all soft pixels and separately for the hair and the glass.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ppid.foreground import DEFAULT_RADII, estimate_foreground_torch, transition_error


def make_scene(height, width, seed=0):
    """Known (image, fg, bg, alpha, regions) as float32 NumPy (HxWx3, HxWx3, HxWx3, HxW) with
    I = aF + (1-a)B; `regions` maps "hair" and "glass" to boolean HxW masks of their soft pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width
    scale = min(height, width)
    r = np.hypot((x - 0.45) * width, (y - 0.5) * height) / scale
    theta = np.arctan2(y - 0.5, x - 0.45)
    core, reach = 0.22, 0.16
    strands = (0.5 + 0.5 * np.cos(70 * theta + 25 * r)) ** 6 * np.clip(1 - (r - core) / reach, 0, 1)
    alpha = np.where(r < core, 1.0, strands)
    glass = (x > 0.55) & (x < 0.8) & (y > 0.2) & (y < 0.8)
    alpha = np.where(glass & (r >= core), 0.35, alpha).astype(np.float32)
    soft = (alpha > 0) & (alpha < 1)
    regions = {"hair": soft & ~glass, "glass": soft & glass}

    def texture(base, freq):
        field = np.stack([np.sin(freq * (x + c) * 6.3) * np.cos(freq * (y - c) * 6.3) for c in (0.1, 0.4, 0.7)], -1)
        return np.clip(np.asarray(base) + 0.12 * field + rng.normal(0, 0.02, (height, width, 3)), 0, 1)

    fg = texture((0.75, 0.5, 0.35), 2.0).astype(np.float32)  # warm, slowly varying (skin, hair)
    bg = texture((0.15, 0.6, 0.25), 5.0).astype(np.float32)  # green, busier (foliage)
    image = (alpha[..., None] * fg + (1 - alpha[..., None]) * bg).astype(np.float32)
    return image, fg, bg, alpha, regions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT (default 1920x1080)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="JSON file to write (printed either way)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    width, height = (int(v) for v in args.size.lower().split("x"))

    image, fg_true, _, alpha, regions = make_scene(height, width)
    device = torch.device(args.device)
    image_t = torch.from_numpy(image).permute(2, 0, 1)[None].to(device)
    alpha_t = torch.from_numpy(alpha)[None, None].to(device)

    def run():
        fg = estimate_foreground_torch(image_t, alpha_t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return fg

    fg = run()  # warm-up (and the result we score)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    fg_np = fg[0].permute(1, 2, 0).cpu().numpy()

    result = {
        "method": "blur-fusion x2 (Forte & Pitie 2021)",
        "radii": list(DEFAULT_RADII),
        "size": [width, height],
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # CPU timings on a shared machine vary with it
        "torch": torch.__version__,
        "ms_median": round(statistics.median(times), 2),
        "ms_all": [round(t, 2) for t in times],
        # alpha-weighted mean |F - F_true| over the soft pixels of each region
        "transition_error": {
            region: {
                "naive_image_colour": round(transition_error(image, fg_true, alpha * mask), 5),
                "blur_fusion": round(transition_error(fg_np, fg_true, alpha * mask), 5),
            }
            for region, mask in {"all": np.ones_like(alpha, bool), **regions}.items()
        },
        "command": "python benchmarks/foreground_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
