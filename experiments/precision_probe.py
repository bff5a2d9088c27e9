"""Does bf16 change the distillation losses themselves? A run's first batches at its initial
weights, each loss term computed twice on the same batch: in float32 and under bf16 autocast as
`train.amp: bf16-always` trains (emulated on a CPU without bf16, where `bf16` falls back to
float32), with each term's gradient on the student's parameters compared (cosine, norm ratio).

Why: the IndexNet PPID student of the same recipe and seed trained in bf16 from one teacher and in
float32 from its retrain landed 2.76 whole-image SAD apart (results/precision_control/). Their
first logged steps, at identical student weights, already differ in the distillation terms (ALD's
L^f 0.043 against 0.097). This probe, run with the retrained teacher, tells which change that is:
if bf16 reproduces the float32 values, the teachers differ; if not, precision changes the loss.

A diagnostic at initialisation: it trains nothing and reads no validation or test image.

    python experiments/precision_probe.py --config results/precision_control/ppid_seed0_float32.json \
        --batches 4 --out results/precision_control/probe_seed0.json
"""

import argparse
import json

import torch

from ppid.config import load_config
from ppid.io import atomic_path, command_line
from ppid.train import autocast_dtype, build_models, forward_losses, make_batches, make_objective

TERMS = ("alpha", "clsd_same", "clsd_cross", "ald_f", "ald_a", "distill")


def term_gradients(objective, terms):
    """{term: flat gradient of that term on the trained parameters} (one backward pass each)."""
    params = [p for p in objective.parameters() if p.requires_grad]
    grads = {}
    for name in TERMS:
        if name not in terms:
            continue
        g = torch.autograd.grad(terms[name], params, retain_graph=True, allow_unused=True)
        grads[name] = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])
    return grads


def probe(cfg, batches):
    torch.manual_seed(cfg["train"]["seed"])  # as training does: the student starts where the run started
    device = torch.device("cpu")
    model, teacher = build_models(cfg, device)
    objective = make_objective(model, cfg, teacher).to(device)
    objective.train()
    source = make_batches(cfg, device, 0, 0, 1)
    rows = []
    for index in range(batches):
        batch, _ = next(source)
        by_precision = {}
        for label, amp in (("float32", None), ("bf16", autocast_dtype("bf16-always", device))):
            terms, _, _ = forward_losses(objective, teacher, batch, amp)
            by_precision[label] = (terms, term_gradients(objective, terms))
        (t32, g32), (t16, g16) = by_precision["float32"], by_precision["bf16"]
        row = {"batch": index}
        for name in g32:
            a, b = g32[name].double(), g16[name].double()
            row[name] = {
                "float32": t32[name].item(),
                "bf16": t16[name].item(),
                "grad_cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
                "grad_norm_ratio_bf16_over_float32": float(b.norm() / a.norm().clamp(min=1e-30)),
            }
        rows.append(row)
        print(json.dumps(row))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a PPID run's config (JSON or YAML)")
    parser.add_argument("--batches", type=int, default=4, help="how many of the run's first batches")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if cfg["mode"] != "ppid":
        parser.error(f"{args.config}: mode is {cfg['mode']!r}; the probe compares distillation terms (mode ppid)")
    cfg["data"]["workers"] = 0  # samples are fixed by index: workers change nothing but the start-up
    rows = probe(cfg, args.batches)
    summary = {}
    for name in TERMS:
        values = [r[name] for r in rows if name in r]
        if values:
            summary[name] = {
                key: sum(v[key] for v in values) / len(values)
                for key in ("float32", "bf16", "grad_cosine", "grad_norm_ratio_bf16_over_float32")
            }
    result = {"command": command_line(argv), "config": args.config, "teacher": cfg["distill"]["teacher"],
              "batches": rows, "mean_over_batches": summary}
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
