"""Reads signal_probe_val.json: per signal, how well does width = k x signal (snapped to the probe's
grid) refine, against the best fixed width and the per-image oracle? k is chosen leaving one student
out (chosen on the other two, read on the third), so no student's number rests on its own fit.

    python results/refine/indexnet_cpu_small_teacher_seeds/probes/summarise_signals.py
"""
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

DATA = json.loads(Path(__file__).with_name("signal_probe_val.json").read_text())
SIGNALS = ["student_soft", "teacher_soft", "teacher_soft_in_band", "band_share"]
KS = np.geomspace(0.01, 4.0, 60)


def rule_sad(rows, signal, k):
    widths = np.array([float(w) for w in rows[0]["refined"]])
    out = []
    for r in rows:
        w = widths[np.argmin(np.abs(widths - min(k * r[signal], widths[-1])))]
        out.append(r["refined"][str(w)])
    return float(np.mean(out))


def main():
    labels = list(DATA)
    widths = list(DATA[labels[0]][0]["refined"])
    print("student | alone | best fixed width | oracle | " + " | ".join(f"{s} (k)" for s in SIGNALS))
    for held in labels:
        rows = DATA[held]
        fixed = {w: np.mean([r["refined"][w] for r in rows]) for w in widths}
        best_w = min(fixed, key=fixed.get)
        oracle = np.mean([min(r["refined"].values()) for r in rows])
        cells = []
        for s in SIGNALS:
            others = [DATA[o] for o in labels if o != held]
            k = min(KS, key=lambda k: np.mean([rule_sad(o, s, k) for o in others]))
            cells.append(f"{rule_sad(rows, s, k):.2f} ({k:.2f})")
        alone = np.mean([r["student"] for r in rows])
        print(f"{held} | {alone:.2f} | {fixed[best_w]:.2f} ({best_w}) | {oracle:.2f} | " + " | ".join(cells))
    print("\nSpearman correlation of each signal with each image's best width:")
    for label, rows in DATA.items():
        best = [float(min(r["refined"], key=r["refined"].get)) for r in rows]
        print(label, {s: round(float(spearmanr([r[s] for r in rows], best)[0]), 2) for s in SIGNALS})
    print("\nauto:0.15 (the command's measured rule) snapped to the grid:",
          {label: round(rule_sad(rows, "student_soft", 0.15), 2) for label, rows in DATA.items()})


if __name__ == "__main__":
    main()
