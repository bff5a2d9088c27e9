"""`ppid evaluate`: SAD / MSE / Grad / Conn of predicted alpha folders, per group, paper-style.

Predictions are paired with ground truth (and trimaps) by file stem; a Composition-1K test set
built by `ppid data build-testset` has one GT alpha per composite, so stems are identical.
Regions: "whole" (every pixel, the trimap-free protocol of Tables 1-3) and "transition"
(trimap == 128, the Composition-1K protocol of Tables 4 and 6). Predictions are never clamped
with a trimap, so a trimap-free student's score holds no privileged information.
"""

import csv
import json
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from . import PpidError
from .data.datasets import read_split
from .io import atomic_path, list_images, read_alpha, read_trimap
from .metrics import CONN_STEP, GRAD_SIGMA, METRICS, REGIONS, UNITS, as_matte, metrics_by_region

ALL = "all"  # summary key of the whole-test-set row
PAPER_GROUPS = ("transparent", "non-transparent")  # listed first, in the paper's order
HEADERS = {"sad": "SAD", "mse": "MSE", "grad": "Grad", "conn": "Conn"}
REGION_TITLES = {"whole": "whole image", "transition": "transition region (trimap == 128)"}
_COMPOSITE_SUFFIX = re.compile(r"_\d+$")


def gap_closed(worse, better, bound):
    """Share of the gap between `worse` and `bound` (lower is better, e.g. SAD) that `better`
    closes: PPID between baseline and teacher, refine between student and teacher. None when
    there is no gap."""
    gap = worse - bound
    return (worse - better) / gap if gap > 0 else None


def resolve_regions(region, have_trimaps):
    """'whole' | 'transition' | 'both' | None (both with trimaps, else whole) -> tuple of regions."""
    if region is None:
        region = "both" if have_trimaps else "whole"
    if region == "both":
        regions = REGIONS
    elif region in REGIONS:
        regions = (region,)
    else:
        raise PpidError(f"unknown region {region!r}; expected whole, transition or both")
    if "transition" in regions and not have_trimaps:
        raise PpidError(f"region {region!r} needs trimaps (--trimap DIR): the transition region is trimap == 128")
    return regions


def group_of(name, split):
    """Group of an image: its own entry, else that of its foreground (`<fg>_<k>` -> `<fg>`)."""
    if name in split:
        return split[name]
    return split.get(_COMPOSITE_SUFFIX.sub("", name))


def evaluate_arrays(items, region="whole", clamping="none"):
    """Evaluate in-memory predictions: items of (name, pred, gt, trimap, group).

    pred/gt: HxW uint8 or float in [0, 1] (NumPy or torch); trimap: uint8 0/128/255 (or float
    {0, 0.5, 1}) or None; group: a split group or None. `clamping` records how the predictions
    were made ("none" for trimap-free students; "trimap" when known trimap regions were set to
    0/1, as trimap-based teachers are). Returns (rows, summary) like `evaluate_folders`.
    """
    items = list(items)
    have_trimaps = bool(items) and all(item[3] is not None for item in items)
    regions = resolve_regions(region, have_trimaps)
    values = (_image_values(pred, gt, trimap, regions, name) for name, pred, gt, trimap, _ in items)
    return _table([(name, group) for name, _, _, _, group in items], values, regions, clamping)


def evaluate_folders(pred_dir, gt_dir, trimap_dir=None, split=None, region=None, progress=False, workers=1):
    """Evaluate the predictions in `pred_dir` against `gt_dir` (and `trimap_dir`), by stem.

    split: a `name group` file (or None); region: 'whole', 'transition', 'both' or None ('both'
    with trimaps, else 'whole'); workers: processes reading and evaluating images in parallel
    (results and their order do not depend on it). Returns (rows, summary): one row per image
    and region, and the summary described in `summarize`.
    """
    regions = resolve_regions(region, trimap_dir is not None)
    if workers < 1:
        raise PpidError(f"workers must be at least 1, got {workers}")
    preds, gts = list_images(pred_dir), list_images(gt_dir)
    if not gts:
        raise PpidError(f"{gt_dir}: no ground-truth images")
    _check_pairs(preds, pred_dir, gts, gt_dir)
    trimaps = list_images(trimap_dir) if trimap_dir is not None else {}
    if trimap_dir is not None:
        missing = sorted(set(gts) - set(trimaps))
        if missing:
            raise PpidError(f"{trimap_dir}: no trimap for {_names(missing)}")
    groups = _groups(gts, split)
    files = [(preds[name], gt_path, trimaps.get(name)) for name, gt_path in gts.items()]
    values = _map_in_order(partial(_file_values, regions=regions), files, workers)
    if progress:
        from .progress import progress

        values = progress(values, total=len(files), desc="evaluate", unit="img")
    return _table(list(zip(gts, groups)), values, regions)


def _groups(names, split):
    """The split group of each name (all None without a split)."""
    if split is None:
        return [None] * len(names)
    split_groups = read_split(split)
    groups = []
    for name in names:
        group = group_of(name, split_groups)
        if group is None:
            raise PpidError(f"{split}: no group for {name!r} (nor for its foreground)")
        groups.append(group)
    return groups


def _map_in_order(fn, jobs, workers):
    """fn over jobs, results in job order; with several workers in a process pool, the first
    failing job (in job order) raises and the jobs not yet started are cancelled."""
    workers = min(workers, len(jobs))
    if workers <= 1:
        yield from map(fn, jobs)
        return
    # spawn: a fresh interpreter per worker, safe whatever threads (torch, BLAS) the caller runs.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(fn, jobs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _file_values(files, regions):
    """Metrics of one (pred, gt, trimap or None) file triple; runs in a worker process."""
    pred_path, gt_path, trimap_path = files
    trimap = read_trimap(trimap_path) if trimap_path is not None else None
    label = ", ".join(str(p) for p in files if p is not None)
    return _image_values(read_alpha(pred_path), read_alpha(gt_path), trimap, regions, label)


def _check_pairs(preds, pred_dir, gts, gt_dir):
    missing, extra = sorted(set(gts) - set(preds)), sorted(set(preds) - set(gts))
    if missing:
        raise PpidError(f"{pred_dir}: no prediction for {_names(missing)} (ground truth in {gt_dir})")
    if extra:
        raise PpidError(f"{gt_dir}: no ground truth for the predictions {_names(extra)} in {pred_dir}")


def _names(names, shown=5):
    return ", ".join(repr(n) for n in names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _image_values(pred, gt, trimap, regions, label):
    """{region: {metric: value}} of one image; `label` names the image in errors."""
    try:
        values = metrics_by_region(pred, gt, trimap, regions)
    except PpidError as err:
        raise PpidError(f"{label}: {err}") from None
    if "transition" in regions and np.isnan(values["transition"]["mse"]):  # MATLAB's 0/0
        raise PpidError(f"{label}: the trimap has no unknown (128) pixels, the transition region is empty")
    return values


def _table(names_and_groups, values, regions, clamping="none"):
    """Rows (one per image and region) and their summary, from per-image values in name order."""
    rows = []
    for (name, group), image_values in zip(names_and_groups, values):
        for region in regions:
            rows.append({"name": name, "group": group, "region": region, **image_values[region]})
    if not rows:
        raise PpidError("nothing to evaluate: no images")
    return rows, summarize(rows, regions, clamping)


def summarize(rows, regions, clamping="none"):
    """Per-region, per-group means of the per-image rows, with the protocol recorded.

    {"protocol": {...}, "count": N, "groups": {group: n}, "results": {region: {group | "all":
    {"count": n, "sad": mean, "mse": mean, "grad": mean, "conn": mean}}}}
    """
    results = {}
    for region in regions:
        by_group = {}
        for row in rows:
            if row["region"] == region:
                if row["group"] is not None:
                    by_group.setdefault(row["group"], []).append(row)
                by_group.setdefault(ALL, []).append(row)
        results[region] = {
            group: {"count": len(members), **{m: float(np.mean([r[m] for r in members])) for m in METRICS}}
            for group, members in _ordered(by_group).items()
        }
    counts = {g: r["count"] for g, r in results[regions[0]].items() if g != ALL}
    return {
        "protocol": {
            "benchmark": "Deep Image Matting MATLAB evaluation (compute_*_loss.m), 8-bit mattes",
            "regions": list(regions),
            "clamping": clamping,
            "units": dict(UNITS),
            "grad_sigma": GRAD_SIGMA,
            "conn_step": CONN_STEP,
        },
        "count": results[regions[0]][ALL]["count"],
        "groups": counts,
        "results": results,
    }


def _ordered(by_group):
    """Paper groups first, then other groups alphabetically, the whole test set last."""
    others = sorted(g for g in by_group if g not in PAPER_GROUPS and g != ALL)
    return {g: by_group[g] for g in (*PAPER_GROUPS, *others, ALL) if g in by_group}


def _group_title(group):
    return "Whole test set" if group == ALL else group[:1].upper() + group[1:]


def _fmt(metric, value):
    return f"{value:.4f}" if metric == "mse" else f"{value:.2f}"


def _clamping_text(clampings):
    if set(clampings) <= {"none"}:
        return "no trimap clamping"
    parts = []
    if "none" in clampings:
        parts.append("trimap-free rows never clamped")
    if "trimap" in clampings:
        parts.append("trimap-based rows clamped to the test trimap's known regions")
    if "derived trimap" in clampings:
        parts.append("refine rows clamped to the trimap derived from the student's alpha (no test trimap)")
    return ", ".join(parts)


def _units_line(region, count, clampings=("none",)):
    return (f"Region: {REGION_TITLES[region]}; {_clamping_text(clampings)}; {count} images. "
            "SAD, Grad, Conn: sums / 1000; MSE: mean (alpha in [0, 1]); lower is better.")


def format_table(summary):
    """The summary as text: per region, one row per group and one for the whole test set."""
    blocks = []
    for region, groups in summary["results"].items():
        lines = [_units_line(region, summary["count"], [summary["protocol"]["clamping"]])]
        width = max(len(_group_title(g)) for g in groups)
        lines.append(f"{'Group':<{width}}  {'N':>5}" + "".join(f"  {HEADERS[m]:>8}" for m in METRICS))
        for group, values in groups.items():
            lines.append(f"{_group_title(group):<{width}}  {values['count']:>5}"
                         + "".join(f"  {_fmt(m, values[m]):>8}" for m in METRICS))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_comparison(summaries):
    """{model name: summary} -> the paper's layout: one row per model, per group SAD MSE Grad Conn.

    Groups are the union over models (paper groups first, whole test set last); a model without
    a group shows '-'. One block per region present in any summary.
    """
    regions = [r for r in REGIONS if any(r in s["results"] for s in summaries.values())]
    blocks = []
    for region in regions:
        per_model = {name: s["results"].get(region, {}) for name, s in summaries.items()}
        groups = list(_ordered({g: None for res in per_model.values() for g in res}))
        width = max(len("Model"), *(len(name) for name in per_model))
        cell = 8 * len(METRICS) + 2 * (len(METRICS) - 1)
        counts = sorted({s["count"] for s in summaries.values()})
        clampings = [s["protocol"]["clamping"] for s in summaries.values()]
        lines = [_units_line(region, "/".join(map(str, counts)), clampings)]
        lines.append(f"{'':<{width}}" + "".join(f"  {_group_title(g):^{cell}}" for g in groups))
        lines.append(f"{'Model':<{width}}" + "".join("  " + "  ".join(f"{HEADERS[m]:>8}" for m in METRICS) for _ in groups))
        for name, res in per_model.items():
            cells = []
            for g in groups:
                cells.append("  ".join(f"{_fmt(m, res[g][m]) if g in res else '-':>8}" for m in METRICS))
            lines.append(f"{name:<{width}}" + "".join(f"  {c}" for c in cells))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_csv(rows, path):
    """Per-image rows (name, group, region, sad, mse, grad, conn), written atomically."""
    try:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["name", "group", "region", *METRICS])
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "group": row["group"] or ""})
    except OSError as err:
        raise PpidError(f"{path}: cannot write ({err.strerror or err})") from None


def write_json(summary, path):
    """The summary (protocol, counts, per-group means) as JSON, written atomically."""
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as err:
        raise PpidError(f"{path}: cannot write ({err.strerror or err})") from None


def predict_testset(model, testset, device, max_items=None, amp=None, refiner=None, rule=None):
    """Run a ppid model over a built test set -> rows (name, pred, gt, trimap, group) for
    `evaluate_arrays`. Teachers get the trimap and are clamped on its known regions, as their
    originals; students get RGB only and are never clamped. With `refiner` (a teacher), a student's
    alpha becomes a trimap by the refine rule (`rule`: low/high/width, ppid.refine) and the teacher
    refines it: no ground-truth trimap is used."""
    import torch

    from .models.common import clamp_to_trimap
    from .refine import check_refiner, refine

    model.eval()
    is_teacher = model.role == "teacher"
    if refiner is not None:
        if is_teacher:
            raise PpidError("--refine takes a trimap-free student's output; this model is a teacher")
        check_refiner(refiner, "the refine model")
        refiner.eval()
    rows = []
    with torch.no_grad():
        for i, item in enumerate(testset):
            if max_items is not None and i >= max_items:
                break
            image = torch.from_numpy(item["image"]).permute(2, 0, 1)[None].to(device)
            trimap = None
            if is_teacher:
                if item["trimap"] is None:
                    raise PpidError(f"{item['name']}: the test set has no trimap, which the teacher needs")
                trimap = torch.from_numpy(item["trimap"].astype(np.float32) / 255.0)[None, None].to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                if refiner is not None:
                    alpha = refine(model, refiner, image, **(rule or {}))[0]
                else:
                    alpha = model(image, trimap).alpha.float()
            if is_teacher:
                alpha = clamp_to_trimap(alpha, trimap)
            alpha = alpha[0, 0].cpu().numpy()
            rows.append((item["name"], alpha, item["alpha"], item["trimap"], item["group"]))
    return rows


FLAT_LEVELS = 13  # 8-bit levels: 5% of the range


def is_flat(alpha, levels=FLAT_LEVELS):
    """True when a matte spans fewer than `levels` 8-bit values: what a dead alpha head predicts
    (one value when its logits are constant; a few when a near-zero scale multiplies them, as the
    first DIM PPID student's did: alpha 0.17-0.20 on every image). A matte of any object spans far
    more: its foreground reaches near 1 and its background near 0."""
    matte = as_matte(alpha)
    return int(matte.max()) - int(matte.min()) < levels


def empty_matte_summary(testset):
    """The summary of an empty matte (alpha 0 everywhere, no model) on a built test set: the floor.
    Where objects cover little of each image, a model that leaves a haze on the background scores
    worse than this, i.e. worse than predicting nothing."""
    items = ((it["name"], np.zeros_like(it["alpha"]), it["alpha"], it["trimap"], it["group"]) for it in testset)
    return evaluate_arrays(items, region=None)[1]  # both regions where the test set has trimaps


def evaluate_model(model, testset, device, max_items=None, amp=None, refiner=None, rule=None):
    """Summary of one model on a built test set: whole image, and transition region when the test
    set has trimaps. `flat_predictions` counts the images whose matte it predicted flat (`is_flat`);
    equal to `count`, the model has collapsed (the metrics then measure a near-constant matte).
    With `refiner`, `empty_refined_mattes` counts the refined mattes that are zero everywhere: the
    student's alpha never exceeded the rule's LOW there (refine.found_nothing)."""
    rows = predict_testset(model, testset, device, max_items, amp, refiner, rule)
    region = "both" if all(r[3] is not None for r in rows) else "whole"
    clamping = "trimap" if model.role == "teacher" else "derived trimap" if refiner is not None else "none"
    summary = evaluate_arrays(rows, region=region, clamping=clamping)[1]
    summary["flat_predictions"] = sum(is_flat(r[1]) for r in rows)
    if refiner is not None:  # all zero: the derived trimap was all background (refine.found_nothing)
        summary["empty_refined_mattes"] = sum(not r[1].any() for r in rows)
    return summary


def add_arguments(parser):
    parser.add_argument("--pred", type=Path, help="folder of predicted alpha mattes")
    parser.add_argument("--gt", type=Path, help="folder of ground-truth alpha (paired by file stem)")
    parser.add_argument("--model", type=Path, action="append", metavar="WEIGHTS",
                        help="instead of --pred/--gt: evaluate this model file on --data (repeat to compare)")
    parser.add_argument("--label", action="append", help="row name for each --model (default: file's folder name)")
    parser.add_argument("--data", type=Path, help="with --model: a built test set (merged/, alpha/, trimaps/, split.txt)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="with --model")
    parser.add_argument("--refine", type=Path, metavar="TEACHER",
                        help="with --model STUDENT: also evaluate student -> trimap from its alpha -> this teacher (refine mode)")
    parser.add_argument("--refine-rule", nargs=3, metavar=("LOW", "HIGH", "WIDTH"),
                        help="refine trimap rule: unknown where LOW < alpha < HIGH, grown by WIDTH x the shorter side, "
                             "or 'auto' / 'auto:K' (a width from the student's soft share; docs/predict.md) (default 0.05 0.95 0.01)")
    parser.add_argument("--trimap", type=Path, help="folder of trimaps (0/128/255) for the transition region")
    parser.add_argument("--split", type=Path, help="'name group' file (groups e.g. transparent, non-transparent)")
    parser.add_argument("--region", choices=("transition", "whole", "both"),
                        help="evaluated pixels (default: both with --trimap, else whole)")
    parser.add_argument("--csv", type=Path, help="write the per-image metrics here")
    parser.add_argument("--json", type=Path, help="write the summary (protocol, counts, group means) here")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="with --pred/--gt: processes evaluating images in parallel (default: all cores); "
                             "results do not depend on it")


def run(args):
    if args.model:
        return _run_models(args)
    if args.pred is None or args.gt is None:
        raise PpidError("give --pred and --gt folders, or --model WEIGHTS with --data TESTSET")
    rows, summary = evaluate_folders(args.pred, args.gt, args.trimap, args.split, args.region, progress=True,
                                     workers=args.workers)
    print(format_table(summary))
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    if args.json:
        write_json(summary, args.json)
        print(f"wrote {args.json}")
    return 0


def _run_models(args):
    import torch

    from .data.datasets import CompositeTestSet
    from .models import load_model

    if args.data is None:
        raise PpidError("--model needs --data, a built test set (ppid data build-testset)")
    labels = args.label or [p.parent.name or p.stem for p in args.model]
    if len(labels) != len(args.model):
        raise PpidError(f"{len(args.label)} --label for {len(args.model)} --model")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise PpidError("--device cuda but no CUDA device is available")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    testset = CompositeTestSet(args.data)
    refiner = load_model(args.refine, device=device) if args.refine else None
    rule = None
    if refiner is not None:
        from .refine import NOTHING_FOUND, check_refiner, parse_rule

        check_refiner(refiner, args.refine)
        rule = parse_rule(args.refine_rule)
    summaries = {}
    for label, path in zip(labels, args.model):
        model = load_model(path, device=device)
        summaries[label] = evaluate_model(model, testset, device)
        if refiner is not None and model.role == "student":
            summaries[f"{label} -> refine"] = evaluate_model(model, testset, device, refiner=refiner, rule=rule)
    print(format_comparison(summaries))
    for label, summary in summaries.items():
        empty = summary.get("empty_refined_mattes", 0)
        if empty:
            print(f"warning: {label}: on {empty} of {summary['count']} images {NOTHING_FOUND.format(low=rule['low'])}")
        if summary["flat_predictions"] - empty:
            print(f"warning: {label} predicted a flat alpha (fewer than {FLAT_LEVELS} of 256 levels) for "
                  f"{summary['flat_predictions'] - empty} of {summary['count']} images (a dead alpha head when it is all of them)")
    if args.json:
        where = args.json.parent
        doc = {"models": {label: relative_to_folder(p, where) for label, p in zip(labels, args.model)},
               "data": relative_to_folder(args.data, where), "summaries": summaries}
        if refiner is not None:  # which teacher and rule made the "-> refine" rows
            doc["refine"] = {"teacher": relative_to_folder(args.refine, where), "rule": rule}
        write_json(doc, args.json)
        print(f"wrote {args.json}")
    return 0


def relative_to_folder(path, folder):
    """`path` as seen from `folder` (POSIX separators): a results file then names its inputs the
    same way on every machine that holds the experiment folder, not by this machine's paths."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(path).as_posix()
