"""A short timing probe on this machine: training-step and evaluation costs, and run estimates.

Each (family, kind) of the plan trains a few steps on random tensors at the budget's crop and
batch (the first step timed apart: allocation, autotuning), and one test image of the budget's
size is predicted and scored. A run's estimate is then
    first step + (iterations - 1) * step + validations * n_val * eval + n_test_images * eval,
with the iterations and validations a resumed run has already done left out.
"""

import statistics
import time

import numpy as np
import torch

from ..metrics import metrics_by_region
from ..models import build
from ..train import autocast_dtype, forward_losses, make_objective


def _device(settings):
    want = settings["device"]
    return torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(run, settings, steps=3):
    """(first step s, median later step s) of one run's kind, on random tensors."""
    device = _device(settings)
    cfg, family, kind = run.config, run.family, run.kind
    amp = autocast_dtype(cfg["train"]["amp"], device)
    torch.manual_seed(0)
    model = build(family, "teacher" if kind == "teacher" else "student", cross_layer=kind == "ppid" and cfg["distill"]["semantic"] == "clsd")
    teacher = build(run.teacher_family, "teacher").to(device).eval().requires_grad_(False) if kind == "ppid" else None
    n, s = settings["batch_size"], settings["size"]
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(n, 3, s, s, generator=g),
        "alpha": torch.rand(n, 1, s, s, generator=g),
        "trimap": torch.randint(0, 3, (n, 1, s, s), generator=g).float() / 2,
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    objective = make_objective(model.to(device), cfg, teacher).to(device)
    if device.type == "cuda" and cfg["train"]["channels_last"]:  # as train runs it: without, the
        # H100 probe gave 0.097 s/step where training took about 0.06
        objective = objective.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last) if teacher is not None else None
        batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
    optimizer = torch.optim.SGD(objective.parameters(), lr=1e-4, momentum=0.9)
    times = []
    for _ in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        terms, _, _ = forward_losses(objective, teacher, batch, amp)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times[1:])


def time_evaluation(family, settings, repeats=2):
    """Seconds to predict and score one test image of the budget's size (float32, as evaluation)."""
    device = _device(settings)
    model = build(family, "student").to(device).eval()
    size = settings["synth_size"]
    rng = np.random.default_rng(0)
    gt = rng.random((size, size)).astype(np.float32)
    trimap = np.full((size, size), 128, np.uint8)
    image = torch.rand(1, 3, size, size, device=device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = model(image).alpha[0, 0].float().cpu().numpy()
        metrics_by_region(pred, gt, trimap)
        times.append(time.perf_counter() - t0)
    return min(times)


def cost_key(run):
    """Runs that cost the same per step: family, kind, whether the student has connectors, and the
    teacher's family."""
    return run.family, run.kind, run.config["distill"]["semantic"] if run.kind == "ppid" else None, run.teacher_family


def estimate(runs, settings, steps=3, log=print, trained=None):
    """{run folder: estimated seconds} for `runs`, probing each (family, kind) once; `trained`
    {run folder: iterations done} counts only what a resumed run has left."""
    step_cost, eval_cost = {}, {}
    for run in runs:
        key = cost_key(run)
        if key not in step_cost:
            step_cost[key] = time_training(run, settings, steps)
            source = f" from {key[3]}" if key[3] not in (None, run.family) else ""
            log(f"probe: {run.family} {run.kind}{'/' + key[2] if key[2] else ''}{source}: first step {step_cost[key][0]:.2f}s, "
                f"then {step_cost[key][1]:.3f}s/step")
        if run.family not in eval_cost:
            eval_cost[run.family] = time_evaluation(run.family, settings)
            log(f"probe: {run.family}: evaluation {eval_cost[run.family]:.3f}s/image")
    iterations, every = settings["iterations"], settings["val_every"]
    test_images = settings["n_test"] * settings["test_per_fg"]
    out = {}
    for run in runs:
        first, step = step_cost[cost_key(run)]
        done = (trained or {}).get(run.folder, 0)
        validations = -(-iterations // every) - done // every  # those still ahead of a resumed run
        evals = validations * settings["n_val"] + test_images
        steps = first + (iterations - done - 1) * step if done < iterations else 0.0
        out[run.folder] = steps + evals * eval_cost[run.family]
    return out, step_cost, eval_cost


def fit_iterations(runs, settings, seconds, step_cost, eval_cost, multiple=50):
    """The largest iteration count (a multiple of `multiple`) at which `runs` fit in `seconds`."""
    per_iteration = fixed = 0.0
    test_images = settings["n_test"] * settings["test_per_fg"]
    for run in runs:
        first, step = step_cost[cost_key(run)]
        per_iteration += step + settings["n_val"] * eval_cost[run.family] / settings["val_every"]
        fixed += first + (settings["n_val"] + test_images) * eval_cost[run.family]
    iterations = int((seconds - fixed) / per_iteration) // multiple * multiple if per_iteration else 0
    return max(iterations, 0)
