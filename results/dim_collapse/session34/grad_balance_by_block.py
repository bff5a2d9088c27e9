"""`results/long_schedule/grad_balance.py` with the student's parts split finer: each decoder block
(0-4: strides 16, 8, 4, 2, 1), the ALD attention units, the encoder and the connectors; prints the
batches' mean gradient of L_alpha, L_ALD^a, CLSD's cross-layer term and the summed distillation
(norm / ratio to L_alpha's / cosine with L_alpha's) and writes the whole result as JSON.

    cd results/reproduce/cpu_small   # the plan's folder: its configs' paths are relative to it
    PYTHONPATH=../../../src python ../../dim_collapse/session34/grad_balance_by_block.py CHECKPOINT BATCHES OUT.json
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "long_schedule"))
import grad_balance  # noqa: E402


def part_of(name):
    head = name.split(".")[0]
    return f"decoder{name.split('.')[1]}" if head == "decoder" else head


grad_balance.part_of = part_of
result = grad_balance.balance(sys.argv[1], int(sys.argv[2]))
for term in ("alpha", "ald_a", "clsd_cross", "distill"):
    print(term, {p: f"{v['norm']:.3g}/{v['ratio']:.2f}/{v['cos']:+.2f}" for p, v in result["batch_mean"][term].items()})
Path(sys.argv[3]).write_text(json.dumps(result, indent=1) + "\n")
