"""Reads this folder's 6000-iteration runs by the rules in README.md, from their committed files
(log.jsonl: the validations; test.json: the test set, read once per model by `ppid evaluate`).

    python results/long_schedule/read_pairs.py

Per seed: each model's val-best (and its step), the pair's verdict by the seed rule ("A second
pair": PPID's val-best against its own baseline's, 2.0 the yardstick, 7.28 the validation floor),
and the test SAD per group with the gap closed against teacher 2 (2.09). Then the finished pairs
together by the pooled rule ("More seeds on a lent GPU", "Session 30"): per group the mean test
difference PPID - baseline, its 95% t interval and the pairs won; and each cause test's recovered
share r (README: "The cause test", "The next cause test"). A run still training is shown as such,
with its last validation; a run not started as such.
"""
import json
from pathlib import Path

from ppid.reproduce.report import mean_ci95

HERE = Path(__file__).parent
TEACHER_SAD, VAL_FLOOR, YARDSTICK, ITERATIONS = 2.09, 7.28, 2.0, 6000
GROUPS = ("all", "transparent", "non-transparent")
# Seed 0's cause tests, each read by r = (V_p - V_c) / (V_p - V_b) on validation: its label and
# the words for r >= 0.75 and r <= 0.25 (README: "The cause test", "The next cause test").
CAUSE_TESTS = {
    "ppid_teacher2_seed0_6000_until05": ("cause test (distillation off at half)", "supported", "not recovered"),
    "ppid_teacher2_noclsd_seed0_6000": ("cause test (no CLSD)", "CLSD accounts for the student's loss",
                                        "removing CLSD does not recover it"),
}


def validations(run):
    if not (HERE / run / "log.jsonl").is_file():
        return {}, False
    rows = [json.loads(line) for line in (HERE / run / "log.jsonl").read_text().splitlines()]
    sads = {r["step"]: r["summary"]["results"]["whole"]["all"]["sad"] for r in rows if r.get("event") == "validation"}
    done = any(r.get("step") == ITERATIONS and "samples_per_s" in r for r in rows)
    return sads, done


def val_best(run):
    sads, done = validations(run)
    step = min(sads, key=sads.get) if sads else None
    return (sads[step] if sads else None), step, done, max(sads, default=None)


def test_sad(run):
    path = HERE / run / "test.json"
    if not path.is_file():
        return None
    summary = next(iter(json.loads(path.read_text())["summaries"].values()))
    return {g: summary["results"]["whole"][g]["sad"] for g in GROUPS}


def verdict(v_ppid, v_base):
    d = v_ppid - v_base
    words = "helps" if d < -YARDSTICK else "hurts" if d > YARDSTICK else "no difference one pair can resolve"
    below = [name for name, v in (("PPID", v_ppid), ("baseline", v_base)) if v <= VAL_FLOOR]
    return words + (f"; below the floor: {', '.join(below)}" if below else "")


def pooled(differences):
    """The pooled rule: worse if the 95% t interval of the mean difference lies above 0, better if
    below, otherwise not resolved."""
    n = len(differences)
    mean = sum(differences) / n
    low, high = mean_ci95(differences)
    words = "PPID is worse" if low > 0 else "PPID is better" if high < 0 else f"not resolved by {n} pairs"
    won = sum(d < 0 for d in differences)
    return f"mean {mean:+.2f} (95% t {low:+.2f} to {high:+.2f}), PPID won {won}/{n} -> {words}"


def main():
    differences = []
    for seed in (0, 1, 2):
        base, ppid = f"baseline_seed{seed}_6000", f"ppid_teacher2_seed{seed}_6000"
        print(f"seed {seed}")
        vals = {}
        for name, run in (("baseline", base), ("PPID", ppid)):
            v, step, done, last = val_best(run)
            vals[name] = v if done else None
            if v is None:
                started = (HERE / run / "log.jsonl").is_file()
                print(f"  {name:8s} " + ("training, no validation yet" if started else "not started"))
                continue
            state = "finished" if done else f"training (last validation at step {last})"
            print(f"  {name:8s} val-best {v:.2f} at step {step}, {state}")
        if None in vals.values():
            print("  the pair is read when both have finished")
            continue
        print(f"  validation: {vals['PPID'] - vals['baseline']:+.2f} -> {verdict(vals['PPID'], vals['baseline'])}")
        tests = test_sad(base), test_sad(ppid)
        if None in tests:
            print("  test: not evaluated yet")
            continue
        for g in GROUPS:
            b, p = tests[0][g], tests[1][g]
            closed = (b - p) / (b - TEACHER_SAD) if g == "all" else None
            extra = f", gap closed {closed:+.0%}" if closed is not None else ""
            print(f"  test {g:16s} baseline {b:.2f}  PPID {p:.2f}  difference {p - b:+.2f}{extra}")
        differences.append({g: tests[1][g] - tests[0][g] for g in GROUPS})
    if len(differences) > 1:
        print(f"pairs read: {len(differences)}; test difference PPID - baseline:")
        for g in GROUPS:
            each = [d[g] for d in differences]
            print(f"  {g:16s} {', '.join(f'{d:+.2f}' for d in each)}: {pooled(each)}")

    v_p, v_b = val_best("ppid_teacher2_seed0_6000")[0], val_best("baseline_seed0_6000")[0]
    seed0_tests = test_sad("baseline_seed0_6000"), test_sad("ppid_teacher2_seed0_6000")
    for cause, (label, recovered, not_recovered) in CAUSE_TESTS.items():
        if not (HERE / cause / "log.jsonl").is_file():
            continue
        v_c, step, done, last = val_best(cause)
        if v_c is None:
            print(f"{label}: training, no validation yet")
        elif not done:
            print(f"{label}: training (val-best so far {v_c:.2f}, last validation at step {last})")
        else:
            r = (v_p - v_c) / (v_p - v_b)
            words = recovered if r >= 0.75 else not_recovered if r <= 0.25 else "partly"
            print(f"{label}: val-best {v_c:.2f} at step {step}; r = {r:.2f} -> {words}"
                  + ("; below the baseline by more than 1.0" if v_c < v_b - 1.0 else ""))
            tests = test_sad(cause)
            if tests is not None and None not in seed0_tests:
                print("  test " + ", ".join(f"{g} {tests[g]:.2f} (baseline {seed0_tests[0][g]:.2f}, PPID {seed0_tests[1][g]:.2f})"
                                          for g in GROUPS))


if __name__ == "__main__":
    main()
