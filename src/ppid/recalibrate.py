"""`ppid recalibrate`: recompute a model's BatchNorm statistics on whole training composites.

Beyond the paper. Models train on crops centred on the unknown band (128 px on `cpu_small`) and
are used on whole images, which are mostly plain foreground and background: BatchNorm's running
statistics, averaged over training crops, then describe other features than the ones it meets.
Recomputing them on whole composites ("precise BN"; no weight changes, no gradient) took the
trimap-free baselines of our reproduction from 13.93 to 11.34 (IndexNet) and from 15.59 to 12.19
(GCA) whole-image SAD on the test set, and left the trimap teachers as they were
(docs/results.md, "BatchNorm statistics recomputed"). Check it on your validation split (`--val`):
whether it helps depends on how far your images are from the training crops.

    ppid recalibrate --model student.safetensors --data data/train --out student_bn.safetensors \
        [--images 64] [--batch-size 8] [--val data/val]

The images: the first N training foregrounds (fg/, alpha/, bg/ as `ppid data synth` writes them,
or any layout `ppid data check` reads, with `--bg-dir` for backgrounds kept apart),
each composited on the background of the same index, covered to the foreground's size as
`ppid data build-testset` does; teachers get the test rule's trimap. Same-sized composites go
through together in batches; the statistics are the average over every batch.
"""

from pathlib import Path

import numpy as np
import torch

from . import PpidError


def whole_composites(train_root, count, batch_size=8, bg_dir=None):
    """Batches (image, trimap) of the first `count` training foregrounds at their full size, each on
    the background of the same index (from `bg_dir` when the backgrounds are kept apart, as
    Adobe's with COCO); trimaps by the test rule, scaled to [0, 1]. Images of one size are batched
    together (a model needs one size per batch)."""
    from .data.compose import composite, test_trimap
    from .data.datasets import find_source
    from .data.testset import cover_background
    from .io import read_alpha, read_image

    source = find_source(train_root, bg_dir=bg_dir)
    available = min(len(source.fg), len(source.bg))
    if not 0 < count <= available:
        raise PpidError(f"{train_root}: {count} images asked for; it has {len(source.fg)} foregrounds and "
                        f"{len(source.bg)} backgrounds (at most {available})")
    by_size = {}
    for fg_path, alpha_path, bg_path in list(zip(source.fg, source.alpha, source.bg))[:count]:
        fg, alpha = read_image(fg_path), read_alpha(alpha_path)
        if alpha.shape != fg.shape[:2]:
            raise PpidError(f"{alpha_path}: alpha size {alpha.shape} differs from its foreground's {fg.shape[:2]}")
        bg = cover_background(read_image(bg_path), *fg.shape[:2])
        image = torch.from_numpy(np.ascontiguousarray(composite(fg, bg, alpha).transpose(2, 0, 1))).float()
        trimap = torch.from_numpy(test_trimap(alpha)).float()[None] / 255
        by_size.setdefault(fg.shape[:2], []).append((image, trimap))
    batches = []
    for pairs in by_size.values():
        for i in range(0, len(pairs), batch_size):
            images, trimaps = zip(*pairs[i:i + batch_size])
            batches.append((torch.stack(images), torch.stack(trimaps)))
    return batches


def recalibrate_batchnorm(model, batches, device="cpu"):
    """Replace every BatchNorm's running statistics, in place, by their average over `batches`
    (forwards in training mode without gradient, as torch.optim.swa_utils.update_bn does:
    PyTorch's cumulative moving average; dropout from a fixed seed, leaving the caller's random
    state as it was). A batch of one image runs with the rest of the model in
    eval mode (IndexNet's ASPP takes two images or more in training mode), and a BatchNorm whose
    input then holds one value per channel (a pooled branch) skips it. The model is in eval mode
    after, also when a forward fails (its statistics are then partly recomputed). Returns the
    number of BatchNorm layers."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [bn.momentum for bn in norms]
    hooks = [bn.register_forward_pre_hook(_batch_stats_where_possible) for bn in norms]
    try:
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: every batch weighs the same
        # Dropout (IndexNet's ASPP) draws as in training, from a fixed seed: the same statistics every time
        devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            for image, trimap in batches:
                model.train(image.shape[0] > 1)
                model(image.to(device), trimap.to(device) if model.role == "teacher" else None)
    finally:
        for bn, momentum, hook in zip(norms, momenta, hooks):
            bn.momentum = momentum
            hook.remove()
        model.eval()
    return len(norms)


def _batch_stats_where_possible(bn, inputs):
    bn.training = inputs[0][:, 0].numel() > 1  # more than one value per channel in the batch


def add_arguments(parser):
    parser.add_argument("--model", required=True, type=Path, metavar="WEIGHTS", help="model file saved by ppid (.safetensors)")
    parser.add_argument("--data", required=True, type=Path, metavar="TRAIN",
                        help="training images: fg/, alpha/, bg/ (as ppid data synth writes them)")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT.safetensors", help="recalibrated model file to write")
    parser.add_argument("--bg-dir", type=Path, metavar="DIR", help="backgrounds kept apart from TRAIN (e.g. COCO for Adobe's set)")
    parser.add_argument("--images", type=int, default=64, help="how many training composites (default 64)")
    parser.add_argument("--batch-size", type=int, default=8, help="composites per forward (default 8)")
    parser.add_argument("--val", type=Path, metavar="VAL", help="a built validation set: print its whole-image SAD before and after")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def run(args):
    from .data.datasets import CompositeTestSet
    from .evaluate import evaluate_model
    from .models import load_model, save_model

    if args.batch_size < 1:
        raise PpidError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.out.resolve() == args.model.resolve():
        raise PpidError(f"{args.out}: the output would overwrite the model it recalibrates; name another file")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    model = load_model(args.model, device)
    valset = CompositeTestSet(args.val) if args.val else None
    before = evaluate_model(model, valset, device)["results"]["whole"]["all"]["sad"] if valset else None
    batches = whole_composites(args.data, args.images, args.batch_size, args.bg_dir)
    layers = recalibrate_batchnorm(model, batches, device)
    if layers == 0:
        raise PpidError(f"{args.model}: the model has no BatchNorm layers; nothing to recalibrate")
    save_model(model, args.out)
    print(f"recalibrate: {layers} BatchNorm layers on {args.images} whole training composites of {args.data} "
          f"({len(batches)} batches); wrote {args.out}")
    if valset:
        after = evaluate_model(model, valset, device)["results"]["whole"]["all"]["sad"]
        verdict = "better" if after < before else "not better: keep the original"
        print(f"recalibrate: validation whole-image SAD {before:.3f} -> {after:.3f} ({verdict})")
    return 0
