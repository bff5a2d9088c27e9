"""CPU inference speed: eager PyTorch against ONNX Runtime (fp32 and int8), and the int8 accuracy cost.

    python benchmarks/onnx_speed.py --out results/onnx_speed.json
    python benchmarks/onnx_speed.py --model student.safetensors --testset DIR --out results/onnx_speed.json

One IndexNet student (`--model`, or a freshly built one with seed 0: speed does not depend on the
weights) at --size x --size, batch 1, --threads threads for both PyTorch and onnxruntime. Variants:
- eager: `model(image)` under torch.inference_mode (what the issue measured);
- onnx_softmax_graph: `ppid export`'s graph before it spelled the index blocks' softmax out as
  exp / sum (a Softmax node on a non-last axis), onnxruntime's default session;
- onnx_fp32_default: today's `ppid export` graph, `onnxruntime.InferenceSession(path)`;
- onnx_fp32: the same graph through `ppid.export.inference_session` (ORT_ENABLE_ALL, sequential,
  --threads intra-op threads that do not spin while waiting);
- onnx_int8: `ppid export --int8` (static QDQ quantisation, calibrated on synthetic composites),
  through `inference_session`;
- eager_1thread, onnx_fp32_1thread: eager and onnx_fp32 on one thread, the comparison least
  disturbed by other work on a shared CPU (two threads wait for each other when either is
  preempted).
Every repeat runs each variant once, in turn (interleaved), so a change in the machine's load hits
them all alike; the JSON keeps every time, the median and its ratio to eager's median (the
one-thread variants: to eager_1thread's).

With --testset (a folder built by `ppid data build-testset`), eager, onnx_fp32 and onnx_int8 alphas
of every composite are scored against the ground truth (whole-image SAD, sum |p - g| / 1000, the
`ppid evaluate` protocol) and compared with eager's alpha (mean and max |difference|).
"""

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import ppid.models.indexnet as indexnet
from ppid.export import calibration_feeds, export_onnx, inference_session, quantize_int8
from ppid.io import command_line, list_images, read_alpha, read_image
from ppid.metrics import sad
from ppid.models import build, load_model

from common import LoadAverage, machine_info, write_result


@contextlib.contextmanager
def softmax_node_graph():
    """Export as before the exp / sum rewrite: the index blocks' softmax as one Softmax node."""
    rewritten = indexnet.softmax_over_positions
    indexnet.softmax_over_positions = lambda idx_de: torch.softmax(idx_de, dim=1)
    try:
        yield
    finally:
        indexnet.softmax_over_positions = rewritten


def export_variants(model, folder):
    """ONNX files: {'softmax_graph', 'fp32', 'int8'} -> path."""
    paths = {name: folder / f"{name}.onnx" for name in ("softmax_graph", "fp32", "int8")}
    with softmax_node_graph():
        export_onnx(model, paths["softmax_graph"])
    export_onnx(model, paths["fp32"])
    t0 = time.perf_counter()
    quantize_int8(paths["fp32"], paths["int8"], calibration_feeds(teacher=False))
    print(f"int8 quantisation: {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def runners(model, paths, threads):
    """Variant name -> function(image NumPy (1, 3, H, W)) -> alpha NumPy (1, 1, H, W)."""
    def eager(n_threads):
        def run(x):
            torch.set_num_threads(n_threads)
            with torch.inference_mode():
                return model(torch.from_numpy(x)).alpha.numpy()
        return run

    def onnx(session):
        return lambda x: session.run(["alpha"], {"image": x})[0]

    return {
        "eager": eager(threads),
        "onnx_softmax_graph": onnx(ort.InferenceSession(str(paths["softmax_graph"]), providers=["CPUExecutionProvider"])),
        "onnx_fp32_default": onnx(ort.InferenceSession(str(paths["fp32"]), providers=["CPUExecutionProvider"])),
        "onnx_fp32": onnx(inference_session(paths["fp32"], threads)),
        "onnx_int8": onnx(inference_session(paths["int8"], threads)),
        "eager_1thread": eager(1),
        "onnx_fp32_1thread": onnx(inference_session(paths["fp32"], 1)),
    }


def time_interleaved(run, size, warmup, repeats):
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    for _ in range(warmup):
        for fn in run.values():
            fn(x)
    times = {name: [] for name in run}
    for r in range(repeats):
        for name, fn in run.items():
            t0 = time.perf_counter()
            fn(x)
            times[name].append(1000 * (time.perf_counter() - t0))
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in times.items()), flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}

    def eager_of(name):  # one-thread variants against one-thread eager
        return "eager_1thread" if name.endswith("_1thread") else "eager"

    return {name: {"ms_median": round(medians[name], 1), "speedup_vs_eager": round(medians[eager_of(name)] / medians[name], 3),
                   "against": eager_of(name), "ms_all": [round(v, 1) for v in t]} for name, t in times.items()}


def score_testset(run, folder, names=("eager", "onnx_fp32", "onnx_int8")):
    """Mean whole-image SAD per variant over the test set, and mean / max |alpha - eager alpha|."""
    folder = Path(folder)
    images, alphas = list_images(folder / "merged"), list_images(folder / "alpha")
    sads = {name: [] for name in names}
    diffs = {name: [] for name in names[1:]}
    for stem, path in images.items():
        x = read_image(path).transpose(2, 0, 1)[None].copy()
        gt = read_alpha(alphas[stem])
        preds = {name: run[name](x)[0, 0] for name in names}
        for name in names:
            sads[name].append(sad(preds[name], gt))
        for name in names[1:]:
            diffs[name].append(np.abs(preds[name] - preds["eager"]))
    result = {"images": len(images), "sad_mean": {k: round(float(np.mean(v)), 4) for k, v in sads.items()}}
    result["sad_change_vs_eager_pct"] = {k: round(100 * (result["sad_mean"][k] / result["sad_mean"]["eager"] - 1), 3) for k in names[1:]}
    result["alpha_vs_eager"] = {k: {"mean_abs": float(np.mean([d.mean() for d in v])), "max_abs": float(max(d.max() for d in v))}
                                for k, v in diffs.items()}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--model", help="IndexNet student weights (default: a freshly built one, seed 0)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch and onnxruntime intra-op threads (default 2)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--testset", help="a built test set to score eager, fp32 and int8 alphas on")
    args = parser.parse_args(argv)

    if args.model:
        model = load_model(args.model)
    else:
        torch.manual_seed(0)
        model = build("indexnet", "student").eval()
    machine = machine_info(onnxruntime=ort.__version__)  # torch's threads before the runs set them
    load = LoadAverage()
    with tempfile.TemporaryDirectory() as tmp:
        run = runners(model, export_variants(model, Path(tmp)), args.threads)
        timings = time_interleaved(run, args.size, args.warmup, args.repeats)
        accuracy = score_testset(run, args.testset) if args.testset else None
    result = {
        "command": command_line(argv),
        "machine": machine | {"load_average": load.record()},
        "settings": {"model": args.model or "indexnet student, untrained (seed 0)", "size": args.size, "batch": 1,
                     "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats, "testset": args.testset},
        "timings": timings,
        "testset_accuracy": accuracy,
    }
    print(json.dumps({k: (v["ms_median"], v["speedup_vs_eager"]) for k, v in timings.items()}))
    if accuracy:
        print(json.dumps({k: accuracy[k] for k in ("sad_mean", "sad_change_vs_eager_pct")}))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
