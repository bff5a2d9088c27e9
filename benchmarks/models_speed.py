"""Parameters, MACs, forward time and peak memory of the nine networks at one input size.

    python benchmarks/models_speed.py --out results/models_speed_cpu.json            # CPU, fp32
    python benchmarks/models_speed.py --device cuda --out results/models_speed_cuda.json

CPU: fp32, batch 1, median of a few forwards after one warm-up; the peak memory is the child
process's peak RSS (each model runs in a fresh process, so peaks do not mix), and `forward_extra_mib`
is that peak minus the RSS just before the first forward (activations and workspace).
CUDA: fp32 and bf16 autocast, model and input channels_last, cuDNN autotuning on, timed with CUDA
events; peak = torch.cuda.max_memory_allocated over the timed forwards.
MACs are counted once per model with forward hooks (batch 1): Conv2d and Linear count
output elements x kernel elements x in_channels / groups; ConvTranspose2d counts input elements x
kernel elements x out_channels / groups (each input element is scattered over the kernel).
"""

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from ppid.io import command_line
from ppid.models import build, count_parameters, list_models

from common import LoadAverage, machine_info, write_result


def count_macs(model, *inputs):
    """Multiply-accumulates of one forward, from hooks on every conv / transposed conv / linear."""
    total = 0

    def hook(module, args, out):
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += args[0].numel() * k * module.out_channels // module.groups
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += out.numel() * k * module.in_channels // module.groups
        else:  # nn.Linear
            total += out.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.inference_mode():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def current_rss_mib():
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):  # not Linux
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def make_inputs(role, size, device, channels_last=False):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=g)
    trimap = (torch.randint(0, 3, (1, 1, size, size), generator=g).float() / 2) if role == "teacher" else None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    move = lambda t: None if t is None else t.to(device).contiguous(memory_format=fmt)  # noqa: E731
    return move(image), move(trimap)


def time_cpu(model, inputs, warmup, repeats):
    with torch.inference_mode():
        for _ in range(warmup):
            model(*inputs)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(*inputs)
            times.append(1000 * (time.perf_counter() - t0))
    return times


def time_cuda(model, inputs, warmup, repeats, dtype):
    autocast = torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            model(*inputs)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(*inputs)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    peak = torch.cuda.max_memory_allocated()
    return times, peak / 2**20, (peak - before) / 2**20


def summary(times):
    # the minimum is the least disturbed by other work on a shared machine
    return {"ms_median": round(statistics.median(times), 2), "ms_min": round(min(times), 2),
            "ms_all": [round(t, 2) for t in times]}


def measure(spec, device, size, warmup, repeats):
    """One model in this (fresh) process: parameters, MACs, time and peak memory."""
    family, role, cross_layer = spec
    torch.manual_seed(0)
    model = build(family, role, cross_layer=cross_layer).eval()
    row = {"family": family, "role": role, "cross_layer": cross_layer, "params": count_parameters(model)}
    inputs = make_inputs(role, size, "cpu")
    rss_before = current_rss_mib()
    row["macs"] = count_macs(model, *inputs)  # on CPU it doubles as the first warm-up
    row["gmacs"] = round(row["macs"] / 1e9, 2)
    if device == "cpu":
        times = time_cpu(model, inputs, warmup - 1, repeats)
        peak = peak_rss_mib()
        row["cpu_fp32"] = summary(times) | {
            "peak_rss_mib": round(peak, 1),
            "forward_extra_mib": None if rss_before is None else round(peak - rss_before, 1),
        }
    else:
        torch.backends.cudnn.benchmark = True
        model = model.to("cuda", memory_format=torch.channels_last)
        inputs = make_inputs(role, size, "cuda", channels_last=True)
        for name, dtype in (("cuda_fp32", torch.float32), ("cuda_bf16", torch.bfloat16)):
            times, peak, extra = time_cuda(model, inputs, warmup, repeats, dtype)
            row[name] = summary(times) | {"peak_mib": round(peak, 1), "forward_extra_mib": round(extra, 1)}
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", type=int, default=512, help="square input size (default 512)")
    parser.add_argument("--warmup", type=int, help="warm-up forwards (default 1 on CPU, 5 on CUDA)")
    parser.add_argument("--repeats", type=int, help="timed forwards (default 3 on CPU, 20 on CUDA)")
    parser.add_argument("--families", nargs="+", help="only these families (default: all)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    warmup = max(1, args.warmup or (1 if args.device == "cpu" else 5))
    repeats = max(1, args.repeats or (3 if args.device == "cpu" else 20))
    specs = [s for s in list_models() if not args.families or s[0] in args.families]

    load = LoadAverage()
    rows = []
    ctx = multiprocessing.get_context("spawn")  # a fresh process per model: clean peak memory
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for spec in specs:
            t0 = time.perf_counter()
            rows.append(pool.apply(measure, (spec, args.device, args.size, warmup, repeats)))
            timing = rows[-1].get("cpu_fp32") or rows[-1]["cuda_fp32"]
            print(f"{spec[0]:9s} {spec[1]:7s} cross={spec[2]!s:5s} {rows[-1]['params']:>11,} params "
                  f"{rows[-1]['gmacs']:8.2f} GMACs {timing['ms_median']:9.1f} ms "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    result = {
        "command": command_line(argv),
        "machine": machine_info(args.device) | {"load_average": load.record()},
        "settings": {"device": args.device, "size": args.size, "batch": 1, "warmup": warmup, "repeats": repeats,
                     "cudnn_benchmark": args.device == "cuda", "channels_last": args.device == "cuda"},
        "models": rows,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
