"""Training-data throughput: the CPU loader (TrainDataset in a DataLoader) against the batch
augmenter (BatchAugmenter on a device bank), in samples per second.

    python benchmarks/data_speed.py --out results/data_speed_cpu.json
    python benchmarks/data_speed.py --device cpu cuda --out results/data_speed_cuda.json

Without `--data` it writes a seeded set of Adobe-like files into a temporary folder (foregrounds
of about 1000 x 800 px with a soft, hair-like edge; 1000 x 750 px backgrounds), so the loader pays
realistic PNG decoding. `--data DIR` reads any layout `ppid data check` accepts.
The loader runs on the CPU with `--workers` processes (2 by default) whatever `--device` says;
the batch augmenter runs on every device listed (CUDA timings synchronise the device).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ppid.data.augment import BatchAugmenter, TrainDataset, load_bank
from ppid.data.datasets import find_source
from ppid.io import command_line, write_image

from common import LoadAverage, machine_info, write_result


def write_dataset(root, n_fg, n_bg, seed=0):
    """Adobe-like files in the custom layout (fg/, alpha/, bg/): fg/alpha pairs with a noisy soft
    boundary, textured backgrounds."""
    rng = np.random.default_rng(seed)
    for sub in ("fg", "alpha", "bg"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    h, w = 1000, 800
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.arctan2(y - h / 2, x - w / 2)
    r = np.hypot(y - h / 2, x - w / 2)
    for i in range(n_fg):
        radius = 250 + 40 * np.sin(rng.integers(3, 9) * theta + rng.random() * 6.3)
        strands = 25 * (0.5 + 0.5 * np.cos(rng.integers(40, 90) * theta)) ** 4
        alpha = np.clip((radius + strands - r) / 6, 0, 1)
        fg = np.clip(rng.random(3) + 0.1 * rng.standard_normal((h, w, 3)), 0, 1)
        write_image(root / f"fg/fg{i:03d}.png", fg)
        write_image(root / f"alpha/fg{i:03d}.png", alpha)
    for i in range(n_bg):
        bg = np.clip(rng.random(3) + 0.15 * rng.standard_normal((750, 1000, 3)), 0, 1)
        write_image(root / f"bg/bg{i:03d}.jpg", bg)


def time_loader(source, size, batch_size, batches, workers):
    dataset = TrainDataset(source, size, length=batch_size * (batches + 1))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # worker start-up and first files are not steady state
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return time.perf_counter() - start


def time_augmenter(augmenter, batch_size, batches, device):
    generator = torch.Generator(device=device).manual_seed(0)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    augmenter.sample(batch_size, generator)  # allocator and kernel warm-up
    sync()
    start = time.perf_counter()
    for _ in range(batches):
        augmenter.sample(batch_size, generator)
    sync()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", nargs="+", default=["cpu"], choices=["cpu", "cuda"], help="devices for the batch augmenter")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4, help="timed batches per measurement (after one warm-up)")
    parser.add_argument("--gpu-batches", type=int, default=50, help="timed batches on CUDA")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the CPU loader")
    parser.add_argument("--data", type=Path, help="a dataset folder (default: generated files)")
    parser.add_argument("--n-fg", type=int, default=8)
    parser.add_argument("--n-bg", type=int, default=8)
    parser.add_argument("--max-side", type=int, default=1024, help="bank resolution (load_bank max_side)")
    parser.add_argument("--out", type=Path, help="JSON file to write (printed either way)")
    args = parser.parse_args(argv)
    if "cuda" in args.device and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    load = LoadAverage()

    with tempfile.TemporaryDirectory() as tmp:
        if not args.data:
            write_dataset(Path(tmp), args.n_fg, args.n_bg)
        source = find_source(args.data or tmp)  # the generated files are in the custom layout
        results = []
        for size in args.sizes:
            seconds = time_loader(source, size, args.batch_size, args.batches, args.workers)
            results.append(record("loader", f"cpu ({args.workers} workers)", size, args, args.batches, seconds))
            print(results[-1])
        for name in args.device:
            device = torch.device(name)
            start = time.perf_counter()
            bank = load_bank(source, device, max_side=args.max_side)
            load_s = time.perf_counter() - start
            batches = args.gpu_batches if device.type == "cuda" else args.batches
            for size in args.sizes:
                seconds = time_augmenter(BatchAugmenter(bank, size), args.batch_size, batches, device)
                results.append(record("batch_augmenter", name, size, args, batches, seconds, bank_load_s=round(load_s, 2)))
                print(results[-1])
    report = {
        "benchmark": "training samples per second (TrainDataset + DataLoader vs BatchAugmenter)",
        "command": command_line(argv),
        "data": str(args.data) if args.data else f"generated: {args.n_fg} fg 1000x800 png, {args.n_bg} bg 1000x750 jpg",
        "machine": machine_info("cuda" if "cuda" in args.device else None) | {"load_average": load.record()},
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        write_result(args.out, report)
    return 0


def record(path, device, size, args, batches, seconds, **extra):
    samples = args.batch_size * batches
    return {
        "path": path,
        "device": device,
        "size": size,
        "batch_size": args.batch_size,
        "samples": samples,
        "seconds": round(seconds, 3),
        "samples_per_s": round(samples / seconds, 1),
        **extra,
    }


if __name__ == "__main__":
    raise SystemExit(main())
