"""Which loss term moves a PPID student: the gradient of each term on the student network at a
checkpoint, over some of the run's own training batches (a diagnostic beside the loss tables; no
test data).

For each batch the student's terms are computed as in training (float32), and for L_alpha and for
gamma times each distillation term the gradient on the student network's parameters (not CLSD's
auxiliary GC blocks), by part: the encoder (where CLSD acts), the cross-layer connectors, and the
rest (decoder, index blocks, ASPP, head, attention). Printed and written per part: each term's
gradient norm, its ratio to L_alpha's, and its cosine with L_alpha's, both per batch (mean over the
batches) and for the batches' mean gradient; the same for the summed distillation.

    PYTHONPATH=src python results/long_schedule/grad_balance.py CHECKPOINT [--batches 8] [--json OUT]

CHECKPOINT is a run's checkpoint_last.pt (or a copy of it); its config gives the teacher, the
data and the batch stream, which continues from the checkpoint's step (a finished run's: its
last batches).
"""
import argparse
import json
from pathlib import Path

import torch

from ppid.config import load_config
from ppid.train import build_models, forward_losses, load_checkpoint, make_batches, make_objective

DISTILL_TERMS = ("clsd_same", "clsd_cross", "ald_f", "ald_a")


def part_of(name):
    """The part of the student a parameter belongs to."""
    head = name.split(".")[0]
    return head if head in ("encoder", "connectors") else "rest"


def flat_grads(loss, named):
    """{part: the loss's gradient on that part's parameters, flattened} (zeros where unused)."""
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    parts = {}
    for (name, p), g in zip(named, grads):
        parts.setdefault(part_of(name), []).append((torch.zeros_like(p) if g is None else g).flatten())
    parts = {k: torch.cat(v) for k, v in parts.items()}
    parts["all"] = torch.cat([parts[k] for k in sorted(parts)])
    return parts


def compare(g, ref):
    """g's norm, its ratio to ref's norm and its cosine with ref."""
    norm, ref_norm = g.norm().item(), ref.norm().item()
    both = norm * ref_norm
    return {
        "norm": norm,
        "ratio": norm / ref_norm if ref_norm > 0 else float("nan"),
        "cos": torch.dot(g, ref).item() / both if both > 0 else float("nan"),
    }


def balance(checkpoint, batches):
    ckpt = load_checkpoint(checkpoint)
    cfg = load_config(overrides=ckpt["config"])  # keys added since the run at their defaults
    if cfg["mode"] != "ppid":
        raise SystemExit(f"{checkpoint}: a {cfg['mode']} run; only a PPID student has distillation terms")
    cfg["data"]["workers"] = 0  # the batches in this process: a diagnostic, not a training run
    device = torch.device("cpu")
    model, teacher = build_models(cfg, device)
    objective = make_objective(model, cfg, teacher).to(device)
    objective.load_state_dict(ckpt["objective"])
    objective.train()  # batch statistics and dropout as in training
    torch.set_rng_state(ckpt["rng"]["torch"])  # the dropout masks the run would draw next: repeatable
    named = [(n, p) for n, p in objective.model.named_parameters() if p.requires_grad]
    gamma = cfg["distill"]["gamma"]
    # A finished run has no next batches: its last ones instead (the loader path is indexed by step).
    start = min(ckpt["step"], cfg["optim"]["iterations"] - batches)
    stream = make_batches(cfg, device, start, 0, 1, ckpt["rng"].get("batch"))
    sums, totals = {}, {}
    for _ in range(batches):
        batch, _gen = next(stream)
        terms, _out, _teacher_out = forward_losses(objective, teacher, batch, None)
        present = [t for t in DISTILL_TERMS if t in terms]
        losses = {"alpha": terms["alpha"], **{t: gamma * terms[t] for t in present}}
        grads = {name: flat_grads(loss, named) for name, loss in losses.items()}
        # The summed distillation's gradient is the sum of its terms' (no further backward pass).
        grads["distill"] = {part: sum(grads[t][part] for t in present) for part in grads["alpha"]}
        for name, parts in grads.items():
            for part, g in parts.items():
                row = sums.setdefault(name, {}).setdefault(part, {"norm": 0.0, "ratio": 0.0, "cos": 0.0})
                for key, value in compare(g, grads["alpha"][part]).items():
                    row[key] += value / batches
                totals.setdefault(name, {}).setdefault(part, torch.zeros_like(g)).add_(g / batches)
    # The batches' mean gradient: what a term pushes consistently, its batch-to-batch noise averaged out.
    means = {name: {part: compare(g, totals["alpha"][part]) for part, g in parts.items()} for name, parts in totals.items()}
    return {"run": cfg["train"]["out"], "step": ckpt["step"], "batches": batches, "gamma": gamma, "per_batch": sums, "batch_mean": means}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--json", type=Path, help="write the table here as JSON")
    args = p.parse_args()
    result = balance(args.checkpoint, args.batches)
    parts = ["all", "encoder", "connectors", "rest"]
    for key, title in (("per_batch", "per batch, mean over the batches"), ("batch_mean", "of the batches' mean gradient")):
        print(f"step {result['step']}, {args.batches} batches; gradient norm / ratio to L_alpha's / cosine with L_alpha's, {title}")
        print("| term | " + " | ".join(parts) + " |")
        print("|---" * (len(parts) + 1) + "|")
        for name, by_part in result[key].items():
            cells = [f"{by_part[k]['norm']:.3g} / {by_part[k]['ratio']:.2f} / {by_part[k]['cos']:+.2f}" if k in by_part else "" for k in parts]
            print(f"| {name} | " + " | ".join(cells) + " |")
        print()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
