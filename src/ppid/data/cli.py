"""`ppid data synth | preview | check | build-testset`."""

from pathlib import Path


def add_arguments(parser):
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("synth", help="write the seeded procedural matting benchmark (the embedded default)")
    p.add_argument("--out", required=True, type=Path, help="output folder (fg/, alpha/, bg/, split.txt, manifest.json)")
    p.add_argument("--n-fg", required=True, type=int, help="number of foregrounds")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed + version = identical bytes)")
    p.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"), help="image size (default 512 512)")
    p.add_argument("--bg-dir", type=Path, help="use real photos from this folder as backgrounds")
    p.add_argument("--n-bg", type=int, help="number of backgrounds (default: as many as foregrounds)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (output does not depend on it; default 2)")
    p.add_argument(
        "--version", type=int, choices=(1, 2), default=2, help="benchmark version (default 2: cluttered sharp backgrounds, textured foregrounds)"
    )

    p = sub.add_parser("preview", help="a grid of composites with their alpha and group label")
    p.add_argument("root", type=Path, help="a dataset folder (fg/, alpha/, bg/) or a test set (merged/, alpha/)")
    p.add_argument("--out", required=True, type=Path, help="output PNG")
    p.add_argument("--max-items", type=int, default=24, help="at most this many samples (default 24)")

    p = sub.add_parser("check", help="validate a dataset folder (Adobe, Distinctions-646 or custom layout)")
    p.add_argument("root", type=Path)
    p.add_argument("--layout", choices=("auto", "adobe", "d646", "custom"), default="auto")
    p.add_argument("--bg", type=Path, help="background folder for the layout's bg list (Adobe: COCO/VOC images)")

    p = sub.add_parser("build-testset", help="Composition-1K protocol: each foreground over N backgrounds")
    p.add_argument("--fg", required=True, type=Path, help="foreground folder")
    p.add_argument("--alpha", required=True, type=Path, help="alpha folder (names match fg by stem)")
    p.add_argument("--bg", required=True, type=Path, help="background folder")
    p.add_argument("--bg-list", type=Path, help="background file names in order, one a line (Adobe test_bg_names.txt)")
    p.add_argument("--fg-list", type=Path, help="foreground names in order (Adobe test_fg_names.txt; default sorted)")
    p.add_argument("--per-fg", type=int, default=20, help="backgrounds per foreground (default 20)")
    p.add_argument("--out", required=True, type=Path, help="output folder (merged/, alpha/, trimaps/, split.txt, checksums.txt)")
    p.add_argument("--split", type=Path, help="'name group' file for the foregrounds (default: <fg>/../split.txt if present)")


def run(args):
    if args.data_command == "synth":
        from .synth import synthesize

        synthesize(
            args.out, args.n_fg, seed=args.seed, size=tuple(args.size), bg_dir=args.bg_dir, n_bg=args.n_bg, workers=args.workers, version=args.version
        )
        return 0
    if args.data_command == "preview":
        from .preview import preview_grid

        preview_grid(args.root, args.out, max_items=args.max_items)
        print(f"wrote {args.out}")
        return 0
    if args.data_command == "check":
        from .datasets import check_dataset

        report, n_errors = check_dataset(args.root, layout=args.layout, bg_dir=args.bg)
        print(report)
        return 1 if n_errors else 0
    if args.data_command == "build-testset":
        from .testset import build_testset

        build_testset(args.fg, args.alpha, args.bg, args.per_fg, args.out, split=args.split, bg_list=args.bg_list, fg_list=args.fg_list)
        return 0
    raise AssertionError(args.data_command)
