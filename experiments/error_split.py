"""Where a model's whole-image SAD comes from: the share of it on true background (alpha <= 0.01),
true foreground (alpha >= 0.99) and the pixels between, over the test set and per group, its mean
prediction on true background, and the largest alpha it predicts (for a teacher: in the trimap's
unknown band, before clamping).

Written to diagnose IndexNet revision 1 (models/indexnet.py), whose head could not predict alpha
above ~0.53 in flat regions; it reads any ppid model on a built test set.

With --refine-json (a refine.json of experiments/refine_table.py), it also splits each refined
student's SAD, with the rule chosen there, into the derived trimap's unknown band (what the teacher
predicts) and the rest (the student's own confident pixels, snapped to 0 / 1, which no teacher
sees), per group: the share outside the band bounds what any teacher can fix with that rule.

    python experiments/error_split.py --model LABEL=M.safetensors [--model ...] --data data/test --out split.json
    python experiments/error_split.py --refine-json results/refine/x/refine.json --data data/test --out split.json

With --teacher and --band-widths, it measures the teacher with the true trimap's unknown band grown
by each width (x the shorter side): whether the teacher itself copes with a band as wide as the
refine rule's, apart from how well the student placed it. A width of 1 makes the whole image
unknown: how well the teacher mattes without its trimap.

    python experiments/error_split.py --teacher T.safetensors --band-widths 0 0.04 0.08 --data data/val --out bands.json
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ppid.data.datasets import CompositeTestSet
from ppid.evaluate import predict_testset, relative_to_folder
from ppid.io import atomic_path, command_line
from ppid.metrics import as_matte
from ppid.models import load_model
from ppid.models.common import clamp_to_trimap
from ppid.refine import trimap_from_alpha

BACKGROUND, FOREGROUND = 0.01, 0.99


def error_split(model, testset):
    """Whole-image SAD and its shares on true background / foreground / between, over the test set
    and per group, the mean prediction on true background, and the largest own alpha."""
    sums, background_pred, largest = {}, {}, 0.0
    for _, alpha, gt, trimap, group in predict_testset(model, testset, torch.device("cpu")):
        # a teacher's alpha is clamped to its trimap: its largest own value is in the unknown band
        own = alpha if model.role == "student" else alpha[trimap == 128]
        largest = max(largest, float(own.max())) if own.size else largest
        pred, gt = eight_bit(alpha), eight_bit(gt)
        error = np.abs(pred - gt) / 1000  # SAD units
        background, foreground = gt <= BACKGROUND, gt >= FOREGROUND
        parts = (error[background].sum(), error[foreground].sum(), error[~background & ~foreground].sum(), 1)
        for g in (group, "all"):
            sums[g] = sums.get(g, np.zeros(4)) + parts
            background_pred.setdefault(g, []).append(pred[background].mean())
    split = {}
    for g, (bg, fg, between, n) in sums.items():
        total = bg + fg + between
        split[g] = {"sad": total / n, "sad_parts": {"background": bg / n, "foreground": fg / n, "between": between / n},
                    "share": {"background": bg / total, "foreground": fg / total, "between": between / total},
                    "background_mean_prediction": float(np.mean(background_pred[g]))}
    return {**split.pop("all"), "largest_alpha": largest, "groups": split}


def eight_bit(matte):
    """The matte as the benchmark scores it: 8-bit, back in [0, 1] as float64."""
    return as_matte(matte).astype(np.float64) / 255


def band_split(student, teacher, testset, rule):
    """Per group: refined SAD, its share outside the derived band, the band's share of the pixels,
    and the student's own SAD with its share outside the same band."""
    cpu = torch.device("cpu")
    refined = predict_testset(student, testset, cpu, refiner=teacher, rule=rule)
    alone = predict_testset(student, testset, cpu)
    sums = {}
    for (_, pred, gt, _, group), (_, student_alpha, *_) in zip(refined, alone):
        band = trimap_from_alpha(torch.from_numpy(student_alpha)[None, None], **rule)[0, 0].numpy() == 0.5
        gt = eight_bit(gt)
        refined_error, student_error = np.abs(eight_bit(pred) - gt) / 1000, np.abs(eight_bit(student_alpha) - gt) / 1000
        for g in (group, "all"):
            s = sums.setdefault(g, np.zeros(6))
            s += (refined_error[~band].sum(), refined_error[band].sum(), student_error[~band].sum(),
                  student_error[band].sum(), band.mean(), 1)
    out = {}
    for g, (r_out, r_band, s_out, s_band, area, n) in sums.items():
        out[g] = {"refined_sad": (r_out + r_band) / n, "refined_outside_share": r_out / (r_out + r_band),
                  "student_sad": (s_out + s_band) / n, "student_outside_share": s_out / (s_out + s_band),
                  "band_area": area / n}
    return out


def grown_band(teacher, testset, width):
    """Per group: the teacher's SAD with the true trimap's unknown band grown by `width` (the refine
    rule's growth applied to the trimap itself), the band's share of the pixels, the mean
    prediction on true background and on true foreground, and the median over images of each
    image's largest alpha. A width of 1 or more makes the whole image unknown: the teacher without
    a trimap."""
    sums = {}
    with torch.no_grad():
        for item in testset:
            image = torch.from_numpy(item["image"]).permute(2, 0, 1)[None]
            trimap = torch.from_numpy(item["trimap"].astype(np.float32) / 255)[None, None]
            if width >= 1:  # not by growing: a pooling window the size of the image is slow
                grown = torch.full_like(trimap, 0.5)
            else:
                grown = trimap_from_alpha(trimap, low=0.25, high=0.75, width=width)  # 0.5 stays unknown
            alpha = eight_bit(clamp_to_trimap(teacher(image, grown).alpha.float(), grown)[0, 0].numpy())
            gt = eight_bit(item["alpha"])
            sad = np.abs(alpha - gt).sum() / 1000
            foreground = alpha[gt >= FOREGROUND].mean() if (gt >= FOREGROUND).any() else np.nan  # none on glass or smoke
            row = (sad, float((grown == 0.5).float().mean()), alpha[gt <= BACKGROUND].mean(), foreground, alpha.max())
            for g in (item["group"], "all"):
                sums.setdefault(g, []).append(row)
    keys = ("sad", "band_area", "background_mean_prediction", "foreground_mean_prediction")
    return {g: {**dict(zip(keys, map(float, np.nanmean(np.array(rows)[:, :4], axis=0)))),
                "median_largest_alpha": float(np.median([r[4] for r in rows]))} for g, rows in sums.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=WEIGHTS")
    parser.add_argument("--refine-json", type=Path, action="append", default=[],
                        help="refine.json of experiments/refine_table.py: split its refined students (repeatable)")
    parser.add_argument("--teacher", type=Path, help="with --band-widths: a teacher's weights")
    parser.add_argument("--band-widths", type=float, nargs="+", default=[],
                        help="grow the true trimap's unknown band by these widths (x the shorter side) for --teacher; 1: the whole image")
    parser.add_argument("--data", type=Path, required=True, help="a built test set")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if not args.model and not args.refine_json and not args.band_widths:
        parser.error("give --model, --refine-json or --teacher with --band-widths")
    if bool(args.band_widths) != (args.teacher is not None):
        parser.error("--teacher and --band-widths go together")
    testset = CompositeTestSet(args.data)
    where = args.out.parent
    doc = {"command": command_line(argv), "data": relative_to_folder(args.data, where), "models": {}}
    for spec in args.model:
        label, _, path = spec.partition("=")
        row = error_split(load_model(path), testset)
        doc["models"][label] = {"weights": relative_to_folder(path, where), **row}
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in row["share"].items())
        print(f"{label}: SAD {row['sad']:.2f} ({shares}); background mean {row['background_mean_prediction']:.3f}; "
              f"largest alpha {row['largest_alpha']:.3f}", flush=True)
        for group, part in row["groups"].items():
            print(f"  {group}: SAD {part['sad']:.2f} = " + " + ".join(f"{k} {v:.2f}" for k, v in part["sad_parts"].items()),
                  flush=True)
    for path in args.refine_json:
        refine_doc, base = json.loads(path.read_text()), path.parent
        teacher = load_model(base / refine_doc["teacher"])
        for label, student in refine_doc["students"].items():
            split = band_split(load_model(base / student["weights"]), teacher, testset, student["rule"])
            doc.setdefault("refine", {})[label] = {"from": relative_to_folder(path, where), "rule": student["rule"],
                                                   "groups": split}
            print(f"{label} -> teacher ({student['rule']}): " + "; ".join(
                f"{g} SAD {v['refined_sad']:.2f}, {100 * v['refined_outside_share']:.0f}% outside the band "
                f"({100 * v['band_area']:.0f}% of the pixels; student alone {v['student_sad']:.2f}, "
                f"{100 * v['student_outside_share']:.0f}% outside)" for g, v in split.items()), flush=True)
    if args.teacher is not None:
        teacher = load_model(args.teacher)
        doc["teacher_grown_band"] = {"weights": relative_to_folder(args.teacher, where), "widths": {}}
        for width in args.band_widths:
            row = grown_band(teacher, testset, width)
            doc["teacher_grown_band"]["widths"][str(width)] = row
            print(f"teacher, true band grown by {width}: " + "; ".join(
                f"{g} SAD {v['sad']:.2f} ({100 * v['band_area']:.0f}% of the pixels; mean on background "
                f"{v['background_mean_prediction']:.3f}, on foreground {v['foreground_mean_prediction']:.3f}; "
                f"largest {v['median_largest_alpha']:.2f})" for g, v in row.items()), flush=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
