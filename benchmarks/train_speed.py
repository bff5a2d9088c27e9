"""Training-step speed of the engine for teacher, baseline-student and PPID-student steps.

Times the real objective (ppid.train.Objective: alpha loss, + CLSD + ALD with a frozen teacher for
PPID) with SGD, autocast as train.amp gives it (`--amps none bf16` times both in one run; channels_last
on CUDA), on batches from the GPU batch augmenter when --data is given (random tensors otherwise).
Modes are timed round robin, one step of each in turn, so their ratios hold on a shared machine.
Writes JSON: ms per step, samples/s and the first step's seconds per precision and mode (peak GPU
memory of all modes together on CUDA); with --compile every mode also runs under torch.compile.
Mode "ppid-full-teacher" runs the teacher's whole forward, as before it stopped at its last tap.

    python benchmarks/train_speed.py --family indexnet --size 256 --batch-size 32 --device cuda --out r.json
    python benchmarks/train_speed.py --device cpu --size 128 --batch-size 8 --amps none bf16 --out r.json
    python benchmarks/train_speed.py --device cpu --size 128 --batch-size 8 --amps none bf16 --emulated-bf16 --out r.json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ppid.config import load_config
from ppid.io import command_line
from ppid.models import build
from ppid.train import autocast_dtype, forward_losses, make_objective, native_cpu_bf16

from common import LoadAverage, machine_info, write_result


def batches(args, device):
    if args.data is None:
        g = torch.Generator(device="cpu").manual_seed(0)
        alpha = torch.rand(args.batch_size, 1, args.size, args.size, generator=g)
        trimap = torch.randint(0, 3, alpha.shape, generator=g).float() / 2
        batch = {"image": torch.rand(args.batch_size, 3, args.size, args.size, generator=g), "alpha": alpha, "trimap": trimap}
        batch = {k: v.to(device) for k, v in batch.items()}
        while True:
            yield batch
    from ppid.data.augment import BatchAugmenter, load_bank
    from ppid.data.datasets import find_source

    aug = BatchAugmenter(load_bank(find_source(args.data), device), args.size)
    gen = torch.Generator(device=device).manual_seed(0)
    while True:
        yield aug.sample(args.batch_size, gen)


def make_step(mode, args, device, amp, compiled=False):
    """One training step of `mode` as a function: its own model, objective, teacher, optimiser and
    batch stream, set up once. "ppid-full-teacher" is the PPID step with the teacher's whole forward
    (alpha included), as the engine ran it before the teacher stopped at its last tap."""
    distils = mode.startswith("ppid")
    cfg = load_config(None, {"mode": "ppid" if distils else mode, "model": {"family": args.family},
                             "distill": {"teacher": "unused"} if distils else {}})
    torch.manual_seed(0)
    model = build(args.family, "teacher" if mode == "teacher" else "student", cross_layer=distils).to(device)
    teacher = build(args.family, "teacher").to(device).eval().requires_grad_(False) if distils else None
    objective = make_objective(model, cfg, teacher).to(device)
    cuda = device.type == "cuda"
    if cuda:
        objective = objective.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher = teacher.to(memory_format=torch.channels_last)
    if mode == "ppid-full-teacher":
        full = teacher
        teacher = lambda image, trimap, taps_only=False: full(image, trimap)  # noqa: E731
    opt = torch.optim.SGD(objective.parameters(), lr=1e-3, momentum=0.9)
    trained = objective
    if compiled:  # as train.compile: true does
        trained = torch.compile(objective)
        teacher = torch.compile(teacher) if teacher is not None else None
    source = batches(args, device)

    def step():
        batch = next(source)
        if cuda:
            batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
        terms, _, _ = forward_losses(trained, teacher, batch, amp)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    return step


def time_modes(runs, args, device, amp):
    """Median ms per step of each (mode, compiled) in `runs`, timed round robin, one step of each in
    turn: a change in the machine's load hits every mode alike, so their ratios hold on a shared
    machine. The first step (compilation under --compile) is reported apart."""
    steps = {(mode, compiled): make_step(mode, args, device, amp, compiled) for mode, compiled in runs}
    times = {run: [] for run in runs}
    first = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        for run, step in steps.items():
            t0 = time.perf_counter()
            step()
            dt = time.perf_counter() - t0
            if i == 0:
                first[run] = dt
            if i >= args.warmup:
                times[run].append(1000 * dt)
    records = {}
    for run in runs:
        ms = statistics.median(times[run])
        records[run] = {"ms_per_step": ms, "samples_per_s": args.batch_size * 1000 / ms, "first_step_s": first[run]}
    if device.type == "cuda":  # all modes share the device: one peak for the lot
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        for record in records.values():
            record["peak_gpu_mem_gib_all_modes"] = peak
    return records


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="indexnet", choices=("dim", "indexnet", "gca"))
    p.add_argument("--modes", nargs="+", default=["teacher", "student", "ppid"],
                   choices=("teacher", "student", "ppid", "ppid-full-teacher"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amps", nargs="+", default=["bf16"], choices=("none", "bf16", "fp16"), help="train.amp values to time")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--data", type=Path, help="dataset folder for the GPU batch augmenter (default: random tensors)")
    p.add_argument("--compile", action="store_true", help="also time every mode under torch.compile (train.compile: true)")
    p.add_argument("--emulated-bf16", action="store_true",
                   help="on a CPU without hardware bf16, time bf16 autocast anyway (oneDNN emulates it)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as the training engine does on CUDA
    load = LoadAverage()
    result = {
        "benchmark": "train_speed",
        "command": command_line(),
        "family": args.family, "size": args.size, "batch_size": args.batch_size, "device": str(device),
        "channels_last": device.type == "cuda",
        "data": "batch augmenter" if args.data else "random tensors",
        "precisions": {},
    }
    if device.type == "cpu":
        result["native_cpu_bf16"] = native_cpu_bf16()
    for name in args.amps:
        amp = autocast_dtype(name, device)
        if args.emulated_bf16 and name == "bf16" and device.type == "cpu":
            amp = torch.bfloat16  # what training used on such CPUs before it checked for hardware bf16
        entry = result["precisions"][name] = {"autocast": str(amp)}
        runs = [(mode, False) for mode in args.modes] + [(mode, True) for mode in args.modes if args.compile]
        for (mode, compiled), record in time_modes(runs, args, device, amp).items():
            entry.setdefault("compiled" if compiled else "modes", {})[mode] = record
    result["machine"] = machine_info(device) | {"load_average": load.record()}
    print(json.dumps(result, indent=2))
    if args.out:
        write_result(args.out, result)


if __name__ == "__main__":
    main()
