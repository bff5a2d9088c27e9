"""`ppid viz`: per-image visual reports on a built test set.

    ppid viz --model student.safetensors [--teacher teacher.safetensors] --data testset/ --out report/

Each test image gives `OUT/NAME.png`, a strip
    image | trimap | GT | teacher alpha | student alpha | |student - GT|
and, with --teacher, a second row with the ALD attention maps (sigmoid of the CBAM spatial-attention
logits at the decoder taps, strides 4 and 2; eq. 5-9) of the teacher and the student side by side.
`OUT/index.html` links every strip with the student's (and teacher's) whole-image SAD and MSE.
A test set without trimaps/ gets the documented test trimap (`ppid.data.compose.test_trimap`).
"""

import html
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from . import PpidError
from .data.compose import test_trimap
from .data.datasets import CompositeTestSet
from .io import write_image
from .metrics import mse, sad
from .models.common import STRIDE
from .models.common import clamp_to_trimap
from .predict import resolve_device

LABEL_HEIGHT = 14
GAP = 4
# |error| colour map: black -> red -> yellow -> white at 0, 1/3, 2/3, 1
HEAT = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=np.float32)


def heat(x):
    """HxW in [0, 1] -> HxWx3 colour (black, red, yellow, white)."""
    pos = np.clip(x, 0, 1) * (len(HEAT) - 1)
    low = np.minimum(pos.astype(int), len(HEAT) - 2)
    t = (pos - low)[..., None]
    return HEAT[low] * (1 - t) + HEAT[low + 1] * t


def run_model(model, image, trimap, device):
    """alpha HxW (a teacher's clamped to the trimap) and the attention maps [stride 4, stride 2]
    (HxW, upsampled) of one image."""
    h, w = image.shape[:2]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(device)
    t = torch.from_numpy(trimap).to(device).float().div(255)[None, None] if model.role == "teacher" else None
    with torch.inference_mode():
        out = model(x, t)
        # the taps live on the padded grid: upsample to it, then crop to the image
        padded = (-(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE)
        maps = [F.interpolate(torch.sigmoid(tap.logits.float()), padded, mode="bilinear", align_corners=False)[0, 0, :h, :w]
                for tap in out.dec]
        alpha = out.alpha.float() if t is None else clamp_to_trimap(out.alpha.float(), t)
        return alpha[0, 0].cpu().numpy(), [m.cpu().numpy() for m in maps]


def _panel(array, label):
    """A labelled uint8 RGB panel from HxW or HxWx3 floats in [0, 1]."""
    rgb = np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array
    img = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    canvas = Image.new("RGB", (img.shape[1], img.shape[0] + LABEL_HEIGHT), "white")
    canvas.paste(Image.fromarray(img), (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((2, 1), label, fill="black")
    return np.asarray(canvas)


def _row(panels):
    h = panels[0].shape[0]
    gap = np.full((h, GAP, 3), 255, np.uint8)
    parts = [p for panel in panels for p in (panel, gap)][:-1]
    return np.concatenate(parts, axis=1)


def strip(item, student, teacher=None):
    """The report image (uint8 HxWx3) for one test item; `student`/`teacher` are (alpha, maps)."""
    alpha, maps = student
    top = [_panel(item["image"], "image"), _panel(item["trimap"] / 255.0, "trimap"), _panel(item["alpha"], "GT")]
    if teacher is not None:
        top.append(_panel(teacher[0], "teacher"))
    top += [_panel(alpha, "student"), _panel(heat(np.abs(alpha - item["alpha"])), "|student - GT|")]
    rows = [_row(top)]
    if teacher is not None:
        bottom = [_panel(m, f"{who} ALD att. /{s}") for who, ms in (("teacher", teacher[1]), ("student", maps))
                  for m, s in zip(ms, (4, 2), strict=True)]
        rows.append(_row(bottom))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, GAP), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)[:-GAP]


def add_arguments(parser):
    parser.add_argument("--model", required=True, metavar="STUDENT", help="model file (.safetensors) to report on")
    parser.add_argument("--teacher", metavar="TEACHER", help="its teacher: adds the teacher alpha and the ALD attention maps")
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="built test set (merged/, alpha/, trimaps/, split.txt)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (PNGs + index.html)")
    parser.add_argument("--max-items", type=int, default=24, metavar="N", help="report the first N images (default 24)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def run(args):
    from .models import load_model

    if args.max_items < 1:
        raise PpidError(f"--max-items must be at least 1, got {args.max_items}")
    device = resolve_device(args.device)
    data = CompositeTestSet(args.data)
    student = load_model(args.model, device)
    teacher = load_model(args.teacher, device) if args.teacher else None
    if teacher is not None and teacher.role != "teacher":
        raise PpidError(f"{args.teacher}: is a {teacher.role}, not a teacher")

    rows = []
    for index in range(min(args.max_items, len(data))):
        item = data[index]
        if item["trimap"] is None:
            item["trimap"] = test_trimap(item["alpha"])
        s_out = run_model(student, item["image"], item["trimap"], device)
        t_out = run_model(teacher, item["image"], item["trimap"], device) if teacher is not None else None
        write_image(args.out / f"{item['name']}.png", strip(item, s_out, t_out))
        scores = [(who, out[0]) for who, out in (("student", s_out), ("teacher", t_out)) if out is not None]
        rows.append((item["name"], item["group"], {who: (sad(a, item["alpha"]), mse(a, item["alpha"])) for who, a in scores}))
    _write_index(args.out / "index.html", rows, args)
    print(f"ppid viz: {len(rows)} reports -> {args.out / 'index.html'}")
    return 0


def _write_index(path, rows, args):
    from .io import atomic_path

    who = ["student"] + (["teacher"] if args.teacher else [])
    head = "".join(f"<th>{w} SAD</th><th>{w} MSE</th>" for w in who)
    body = []
    for name, group, scores in rows:
        cells = "".join(f"<td>{scores[w][0]:.2f}</td><td>{scores[w][1]:.4f}</td>" for w in who)
        link = html.escape(f"{name}.png", quote=True)
        body.append(f'<tr><td><a href="{link}">{html.escape(name)}</a></td><td>{html.escape(group or "")}</td>{cells}'
                    f'</tr>\n<tr><td colspan="{2 + 2 * len(who)}"><a href="{link}"><img src="{link}" style="max-width:100%"></a></td></tr>')
    title = html.escape(f"ppid viz: {Path(args.model).name}" + (f" vs {Path(args.teacher).name}" if args.teacher else ""))
    page = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\n<h1>{title}</h1>\n"
            f"<p>data: {html.escape(str(args.data))}; SAD/1000 and MSE on the whole image</p>\n"
            f"<table border=\"1\" cellpadding=\"3\"><tr><th>image</th><th>group</th>{head}</tr>\n"
            + "\n".join(body) + "\n</table></body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page)
