"""`ppid demo`: the whole pipeline on the embedded default, on a laptop CPU in minutes.

Synthesises a small training set and a separately seeded test set, trains a tiny-resolution IndexNet
teacher, a baseline student and a PPID student (CLSD + ALD) with the same engine as `ppid train`,
evaluates all three with the benchmark metrics and prints the paper-style table, with an empty
matte's scores (alpha 0, no model) as the floor. At this scale it
shows that the pipeline works end to end, not the paper's science: the numbers of a few hundred
CPU steps say little about distillation (see results/ for the real experiments).
"""

import json
import time
from pathlib import Path

from .config import load_config


def add_arguments(parser):
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    parser.add_argument("--family", choices=("indexnet", "dim", "gca"), default="indexnet")
    parser.add_argument("--size", type=int, default=64, help="training crop size (multiple of 32; default 64)")
    parser.add_argument("--steps", type=int, default=150, help="iterations per model (default 150)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-fg", type=int, default=24, help="training foregrounds to synthesise (default 24)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def demo_configs(args, data_dir):
    """The three runs: teacher, baseline student, PPID student (teacher from the first run)."""
    common = {
        "model": {"family": args.family},
        "data": {
            "train_root": str(data_dir / "train"),
            "val_root": None,  # the demo keeps each model's last step: nothing is selected, on any split
            "size": args.size,
            "workers": 0,
        },
        "optim": {"iterations": args.steps, "batch_size": args.batch_size, "lr": 0.01, "grad_clip": 5.0},
        "train": {
            "device": args.device,
            "log_every": 10,
            "val_every": args.steps,
            "image_every": args.steps,
            "ckpt_every": args.steps,
        },
    }
    teacher_out = args.out / "teacher"
    runs = {
        "teacher": {"name": "teacher", "mode": "teacher"},
        "student": {"name": "student", "mode": "student"},
        "ppid": {
            "name": "ppid",
            "mode": "ppid",
            "distill": {"teacher": str(teacher_out / "model_last.safetensors")},
        },
    }
    configs = {}
    for key, run in runs.items():
        overrides = _merge(common, run)
        overrides["train"] = dict(overrides["train"], out=str(args.out / key))
        configs[key] = load_config(None, overrides)
    return configs


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def run(args):
    from .data.preview import preview_grid
    from .data.synth import synthesize
    from .data.testset import build_testset
    from .data.datasets import CompositeTestSet
    from .evaluate import empty_matte_summary, evaluate_model, format_comparison
    from .models import load_model
    from .train import train

    start = time.perf_counter()
    data_dir = args.out / "data"
    size = (max(2 * args.size, 96),) * 2
    print(f"[1/5] synthesising {args.n_fg} training and 6 test foregrounds at {size[0]} px")
    synthesize(data_dir / "train", args.n_fg, seed=0, size=size)
    synthesize(data_dir / "test_src", 6, seed=1, size=size, n_bg=6)
    build_testset(
        data_dir / "test_src" / "fg", data_dir / "test_src" / "alpha", data_dir / "test_src" / "bg", 2,
        data_dir / "test", split=data_dir / "test_src" / "split.txt",
    )
    configs = demo_configs(args, data_dir)
    results = {}
    for i, key in enumerate(("teacher", "student", "ppid"), start=2):
        print(f"[{i}/5] training the {args.family} {key} for {args.steps} steps at {args.size} px")
        train(configs[key])
    print("[5/5] evaluating on the held-out synthetic test set (whole image and transition region)")
    testset = CompositeTestSet(data_dir / "test")
    import torch

    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    labels = {"teacher": f"{args.family} (trimap)", "student": f"{args.family} baseline", "ppid": f"{args.family}-PPID"}
    for key in ("teacher", "student", "ppid"):
        model = load_model(args.out / key / "model_last.safetensors", device=device)
        results[labels[key]] = evaluate_model(model, testset, device)
    results["empty matte (no model)"] = empty_matte_summary(testset)  # the floor: a row above it learned nothing SAD sees
    table = format_comparison(results)
    print(table)
    preview_grid(data_dir / "test", args.out / "preview.png")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "table.txt").write_text(table + "\n")
    print(
        f"done in {time.perf_counter() - start:.0f} s: table {args.out / 'table.txt'}, preview {args.out / 'preview.png'}, "
        f"models {args.out}/*/model_last.safetensors\n"
        "note: a demo-sized run shows the pipeline, not the science; see results/ for the experiments."
    )
    return 0
