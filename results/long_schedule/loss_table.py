"""Mean of the logged training losses per 1000 steps, for the runs named (this folder's log.jsonl
files; the training crops, no test data): the tables of README.md's readings.

    python results/long_schedule/loss_table.py baseline_seed0_6000 ppid_teacher2_seed0_6000 [...]
    python results/long_schedule/loss_table.py --key l1_b RUN [...]   # background L1 instead

A run still training shows the blocks it has reached; a block with no logged row is blank.
"""
import argparse
import json
from pathlib import Path

HERE = Path(__file__).parent


def block_means(run, key, block=1000):
    """{first step of the block: mean of `key` over the logged training rows in it}."""
    sums = {}
    for line in (HERE / run / "log.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "event" in row or key not in row:
            continue
        start = (row["step"] - 1) // block * block + 1
        total, count = sums.get(start, (0.0, 0))
        sums[start] = (total + row[key], count + 1)
    return {start: total / count for start, (total, count) in sums.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="folders of this directory")
    p.add_argument("--key", default="alpha", help="a logged term: alpha (L_alpha), l1_b, distill, total, ...")
    p.add_argument("--block", type=int, default=1000)
    args = p.parse_args()
    tables = {run: block_means(run, args.key, args.block) for run in args.runs}
    starts = sorted({s for t in tables.values() for s in t})
    print("| steps | " + " | ".join(f"{args.key}, {run}" for run in args.runs) + " |")
    print("|---" * (len(args.runs) + 1) + "|")
    for s in starts:
        cells = [f"{tables[run][s]:.3f}" if s in tables[run] else "" for run in args.runs]
        print(f"| {s}-{s + args.block - 1} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
