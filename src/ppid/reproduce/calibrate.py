"""Calibration of ALD's attention normalisation (`distill.attention_norm`), on the validation split.

The paper leaves M's normalisation open (DESIGN.md, docs/training.md); each reading changes the
balance of L^f and L^a against the alpha loss by orders of magnitude. `ppid reproduce
--calibrate-ald` trains the first family's seed-0 PPID student once per reading, beside the
plan's own (the configured default), and compares them on what selection may use: the loss
balance from the training logs and the validation split's SAD. The test set plays no part.
"""

import json
import statistics
from pathlib import Path

from ..distill.ald import NORMS
from ..io import atomic_path
from .plan import TABLE_VARIANTS, Run, divergence, read_log, run_hash


def calibration_runs(runs, data):
    """The seed-0 PPID student of the first family, under each reading other than its own (the
    same hash as the plan's PPID run gets when that reading is the default)."""
    base = next((r for r in runs if r.variant == "ppid" and r.seed == 0), None)
    if base is None:
        return []
    extra = []
    for norm in NORMS:
        if norm == base.config["distill"]["attention_norm"]:
            continue
        cfg = json.loads(json.dumps(base.config))
        cfg["distill"]["attention_norm"] = norm
        cfg["name"] = f"{base.family}_ppid-{norm}_seed0"
        teacher = next(r for r in runs if r.folder == base.teacher)
        extra.append(Run(base.family, f"ppid-{norm}", 0, cfg, run_hash(cfg, data, teacher.hash), base.teacher))
    return [base] + extra


def with_calibration(runs, data):
    """The plan with the calibration runs after the first family's Table 1 students of every seed:
    paired Table 1 results (mean and spread) come before the readings' comparison."""
    extra = calibration_runs(runs, data)[1:]
    if not extra:
        return runs
    family = extra[0].family
    table1 = set(TABLE_VARIANTS[1])
    at = max(i for i, r in enumerate(runs) if r.family == family and (r.variant in table1 or r.variant == "teacher")) + 1
    return runs[:at] + extra + runs[at:]


def summarise_run(folder):
    """Loss balance (each distillation term / L_alpha: first step, mean over the run) and the
    validation SAD of the selected step, from a run's log."""
    records = read_log(folder)
    steps = [r for r in records if "event" not in r and "alpha" in r]
    vals = [r for r in records if r.get("event") == "validation"]
    if not steps or not vals:
        return None
    ratios = sorted(k for k in steps[0] if k.startswith("ratio_"))
    best = min(vals, key=lambda r: r["summary"]["results"]["whole"]["all"]["sad"])
    results = best["summary"]["results"]
    return {
        "first_step": {k[6:]: steps[0][k] for k in ratios},
        "mean_over_run": {k[6:]: statistics.fmean(r[k] for r in steps if k in r) for k in ratios},
        "alpha_loss_first_last": [steps[0]["alpha"], steps[-1]["alpha"]],
        "val_best_step": best["step"],
        "val_sad": {region: {g: v["sad"] for g, v in groups.items()} for region, groups in results.items()},
    }


def write_calibration(root, runs):
    """DIR/calibration.json and .md; returns the reading with the lowest validation SAD (whole
    image, all images), or None while runs are missing."""
    root = Path(root)
    rows = {}
    for run in runs:
        norm = run.config["distill"]["attention_norm"]
        diverged = divergence(run, root)
        if diverged is not None:  # a reading that cannot train is never chosen
            rows[norm] = {"run": run.folder, "diverged_from_step": diverged["step"]}
            continue
        summary = summarise_run(root / run.folder) if (root / run.folder / "result.json").is_file() else None
        if summary is not None:
            rows[norm] = {"run": run.folder, **summary}
    trained = [n for n in rows if "val_sad" in rows[n]]
    chosen = min(trained, key=lambda n: rows[n]["val_sad"]["whole"]["all"]) if len(rows) == len(runs) and trained else None
    doc = {"rule": "lowest validation whole-image SAD (all images) of the val-best step; the test set is not used",
           "default_when_run": runs[0].config["distill"]["attention_norm"] if runs else None,
           "chosen": chosen, "readings": rows}
    with atomic_path(root / "calibration.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["# ALD attention-normalisation calibration (validation split)", "",
             f"Rule: {doc['rule']}. Chosen: **{chosen or 'pending'}**.", "",
             "| reading | first step: term / L_alpha | mean over the run | val SAD whole (T / NT / all) | val SAD transition (all) | val-best step |",
             "|---|---|---|---|---|---|"]
    for norm, row in rows.items():
        if "diverged_from_step" in row:
            lines.append(f"| {norm} | diverged: loss NaN/inf from step {row['diverged_from_step']} | - | - | - | - |")
            continue
        first = ", ".join(f"{k} {v:.3g}" for k, v in row["first_step"].items())
        mean = ", ".join(f"{k} {v:.3g}" for k, v in row["mean_over_run"].items())
        whole = row["val_sad"]["whole"]
        sads = " / ".join(f"{whole.get(g, float('nan')):.3f}" for g in ("transparent", "non-transparent", "all"))
        trans = row["val_sad"].get("transition", {}).get("all")
        lines.append(f"| {norm} | {first} | {mean} | {sads} | {'-' if trans is None else f'{trans:.3f}'} | {row['val_best_step']} |")
    with atomic_path(root / "calibration.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return chosen
