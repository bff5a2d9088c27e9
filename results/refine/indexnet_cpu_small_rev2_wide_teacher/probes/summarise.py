"""Prints what the width and stability probes found (validation, whole-image SAD): each fixed band
width, the per-image best width (an oracle: it reads the ground truth) and the rule 'the smallest
width whose matte changes by less than TAU when the band grows to the next width'.

    python results/refine/indexnet_cpu_small_rev2_wide_teacher/probes/summarise.py
"""
import json
from pathlib import Path

import numpy as np

here = Path(__file__).parent
for name in ("width_probe_val.json", "stable_probe_val.json"):
    print(name)
    for label, rows in json.loads((here / name).read_text()).items():
        sads = [r["w"] if "w" in r else {w: {"sad": s} for w, s in r["refined"].items()} for r in rows]
        widths = list(sads[0])
        fixed = {w: round(float(np.mean([s[w]["sad"] for s in sads])), 2) for w in widths}
        oracle = np.mean([min(s[w]["sad"] for w in widths) for s in sads])
        print(f"  {label}: student {np.mean([r['student'] for r in rows]):.2f}; fixed widths {fixed}; per-image best (oracle) {oracle:.2f}")
        if "w" in rows[0]:
            for tau in (0.005, 0.01, 0.015, 0.02, 0.03):
                picks = []
                for s in sads:
                    calm = [w for w in widths[:-1] if s[w]["change_next"] < tau]
                    picks.append(s[calm[0] if calm else widths[-1]]["sad"])
                print(f"    smallest width whose matte changes < {tau} at the next: {np.mean(picks):.2f}")
