"""How large the CLSD connectors' path is in a PPID student's forward pass: per encoder level n, the
spread (std over batch, channels and positions) of the block output F_n, of the connector's
cross_n = conv3x3_stride2(Fbar_{n-1}) and of their sum Fbar_n, which is what the next block and
(n = 5) the decoder receive; beside them the teacher's F_n (CLSD's target) and the student's alpha
logits' spread. A diagnostic on training batches (float32, train-mode BatchNorm as in training).

    PYTHONPATH=src python results/dim_collapse/session34/feature_scale.py CHECKPOINT [--batches 4] [--json OUT]
    PYTHONPATH=src python results/dim_collapse/session34/feature_scale.py --init CONFIG ...

CHECKPOINT is a run's checkpoint_last.pt (run from the folder its config's paths are relative to);
--init builds the student of CONFIG at initialisation (seeded with the config's seed) instead.
"""
import argparse
import json
from pathlib import Path

import torch

from ppid.config import load_config
from ppid.train import build_models, load_checkpoint, make_batches


def spread(x):
    return x.float().std().item()


def scales(checkpoint, init_config, batches):
    if init_config is not None:
        cfg, ckpt = load_config(init_config), None
        torch.manual_seed(cfg["train"]["seed"])
    else:
        ckpt = load_checkpoint(checkpoint)
        cfg = load_config(overrides=ckpt["config"])
    cfg["data"]["workers"] = 0
    device = torch.device("cpu")
    model, teacher = build_models(cfg, device)
    if ckpt is not None:
        # the objective's state holds the student under "model."; the GC blocks are not needed here
        prefix = "model."
        model.load_state_dict({k[len(prefix):]: v for k, v in ckpt["objective"].items() if k.startswith(prefix)})
    model.train()
    step = 0 if ckpt is None else min(ckpt["step"], cfg["optim"]["iterations"] - batches)
    stream = make_batches(cfg, device, step, 0, 1, None if ckpt is None else ckpt["rng"].get("batch"))
    rows = []
    with torch.no_grad():
        for _ in range(batches):
            batch, _gen = next(stream)
            out = model(batch["image"])
            t_out = teacher(batch["image"], batch["trimap"], taps_only=True) if teacher is not None else None
            levels = []
            for n, f in enumerate(out.enc):
                c = out.cross[n - 1] if n > 0 and out.cross else None
                levels.append({
                    "F": spread(f),
                    "cross": spread(c) if c is not None else None,
                    "Fbar": spread(f + c) if c is not None else spread(f),
                    "teacher_F": spread(t_out.enc[n]) if t_out is not None else None,
                })
            rows.append({"levels": levels, "logits": spread(out.alpha_logits)})
    mean = lambda key, n: sum(r["levels"][n][key] for r in rows) / len(rows) if rows[0]["levels"][n][key] is not None else None
    levels = [{k: mean(k, n) for k in rows[0]["levels"][n]} for n in range(len(rows[0]["levels"]))]
    # file names only: the paths are this machine's (the run is the config's)
    return {"checkpoint": Path(checkpoint).name if checkpoint else None, "init_config": Path(init_config).name if init_config else None,
            "step": None if ckpt is None else ckpt["step"], "batches": batches, "levels": levels,
            "logits": sum(r["logits"] for r in rows) / len(rows)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, nargs="?")
    p.add_argument("--init", type=Path, help="a run config: its student at initialisation")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if (args.checkpoint is None) == (args.init is None):
        p.error("give a CHECKPOINT or --init CONFIG")
    result = scales(args.checkpoint, args.init, args.batches)
    print(f"step {result['step']}, {args.batches} batches; spread (std) per encoder level; logits {result['logits']:.3g}")
    print("| level | F_n | cross_n | Fbar_n | teacher F_n |")
    print("|---|---|---|---|---|")
    fmt = lambda v: "" if v is None else f"{v:.3g}"
    for n, lv in enumerate(result["levels"], 1):
        print(f"| {n} | {fmt(lv['F'])} | {fmt(lv['cross'])} | {fmt(lv['Fbar'])} | {fmt(lv['teacher_F'])} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
