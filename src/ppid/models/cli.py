"""`ppid models`: the nine networks with their trainable parameter counts beside the paper's."""

import json

from .. import PpidError

TOLERANCE = 0.02  # teachers and baseline students must land within 2% of the paper's figure


def add_arguments(parser):
    parser.add_argument("--json", metavar="FILE", help="also write the table as JSON")


def parameter_table():
    """One row per network of `list_models()`: counts beside the paper's (Table 1).

    `within_tolerance` is the 2% rule for teachers and baseline students; PPID students (whose
    connectors we size from eq. 4, not from the paper) only report their delta (None there)."""
    from . import PAPER_PARAMS, build, count_parameters, list_models

    rows = []
    for family, role, cross_layer in list_models():
        params = count_parameters(build(family, role, cross_layer=cross_layer))
        paper = PAPER_PARAMS[family]["ppid" if cross_layer else "plain"]
        delta = (params - paper) / paper
        rows.append(
            dict(
                family=family,
                role=role,
                cross_layer=cross_layer,
                params=params,
                paper_params=int(paper),
                delta_percent=round(100 * delta, 2),
                within_tolerance=None if cross_layer else abs(delta) <= TOLERANCE,
            )
        )
    return rows


def format_table(rows):
    header = ("family", "role", "cross_layer", "params", "paper", "delta %", "2% rule")
    lines = []
    for r in rows:
        rule = "n/a (PPID)" if r["within_tolerance"] is None else ("ok" if r["within_tolerance"] else "FAILS")
        lines.append(
            (
                r["family"],
                r["role"],
                "yes" if r["cross_layer"] else "no",
                f"{r['params']:,}",
                f"{r['paper_params'] / 1e6:.2f}M",
                f"{r['delta_percent']:+.2f}",
                rule,
            )
        )
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*line).rstrip() for line in (header, *lines))


def run(args):
    from ..io import atomic_path

    try:
        rows = parameter_table()
    except ModuleNotFoundError as err:
        raise PpidError(f"a model family is not available: {err}") from None
    print(format_table(rows))
    if args.json:
        try:
            with atomic_path(args.json) as tmp:
                tmp.write_text(json.dumps(rows, indent=2) + "\n")
        except OSError as err:
            raise PpidError(f"{args.json}: cannot write ({err.strerror})") from None
        print(f"wrote {args.json}")
    return 0 if all(r["within_tolerance"] is not False for r in rows) else 1
