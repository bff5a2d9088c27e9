"""The reproduction report: tables.md, tables.json and one bar chart per table, from the runs'
result.json files, beside the paper's values; and Table 1's validation curves from their logs.

Per table and family: mean +- std over seeds of every metric, per group and region; the paired
per-seed difference of each row against the table's reference row (Table 1: PPID - baseline), its
95% confidence interval over the seeds and the seeds it wins; Table 1's share of the
teacher-baseline gap that PPID closes, with the gain's interval; and whether the paper's order of
the ablation rows holds. Lower is better for every metric.
"""

import json
import math
import statistics
from pathlib import Path

from scipy.special import stdtrit

from ..evaluate import FLAT_LEVELS, empty_matte_summary, gap_closed
from ..io import atomic_path
from ..models import revision
from .paper import GROUPS, METRICS, PAPER
from .causes import PREFIX as GAMMA_PREFIX
from .causes import distill_ratio
from .plan import CROSS_FAMILY, CROSS_PREFIX, EMPTY_MATTE, SELECTION, TABLE_VARIANTS, divergence, recorded_log, recorded_result
from .teachers import ppid_variant

TITLES = {
    1: "Table 1: teacher (trimap) / trimap-free baseline / PPID student (whole image)",
    3: "Table 3: semantic distillation ablation, all rows with ALD (whole image)",
    4: "Table 4: local distillation ablation, all rows with CLSD (transition region)",
    6: "Table 6: ALD's two terms, all rows with CLSD (transition region)",
}
CROSS_ROWS = tuple(CROSS_PREFIX + teacher for _, teacher in CROSS_FAMILY)  # beyond the paper, Table 1
ROWS = {1: ("teacher", "baseline", "ppid") + CROSS_ROWS, 3: TABLE_VARIANTS[3], 4: TABLE_VARIANTS[4], 6: TABLE_VARIANTS[6]}
LABELS = {
    "teacher": "teacher (trimap)", "baseline": "baseline", "ppid": "PPID (CLSD + ALD)",
    "noclsd": "ALD only (no SD/CLSD)", "sd": "SD + ALD", "noald": "CLSD only (no LD/ALD)",
    "ld": "CLSD + LD", "ald_f": "CLSD + L^f", "ald_a": "CLSD + L^a",
} | {row: f"PPID from the {row[len(CROSS_PREFIX):].upper()} teacher (cross-family; not in the paper)" for row in CROSS_ROWS}
NAMES = {"sad": "SAD", "mse": "MSE", "grad": "Grad", "conn": "Conn"}
REGION = {1: "whole", 3: "whole", 4: "transition", 6: "transition"}
# The reference row each table's paired differences are taken against, and the paper's claimed
# order, best (lowest SAD) first.
REFERENCE = {1: "baseline", 3: "noclsd", 4: "noald", 6: "noald"}
ORDER = {1: ("ppid", "baseline"), 3: ("ppid", "sd", "noclsd"), 4: ("ppid", "ld", "noald"), 6: ("ppid", "ald_f", "ald_a", "noald")}


def load_results(root, runs):
    """{(family, variant, seed): result} for the planned runs that have finished with test results
    (not those that diverged: see diverged_runs)."""
    results = {}
    for run in runs:
        result = recorded_result(run, root)  # a teacher being retrained: its kept record
        if result is not None and result.get("hash") == run.hash and "diverged" not in result:
            results[(run.family, run.variant, run.seed)] = result
    return results


def diverged_runs(root, runs):
    """{run folder: the step from which its loss stayed NaN/inf} for the planned runs that diverged."""
    return {run.folder: found["step"] for run in runs if (found := divergence(run, root)) is not None}


def collapsed(result):
    """True for a run whose selected model predicts a flat matte on every test image (fewer than
    `evaluate.FLAT_LEVELS` 8-bit values: a dead alpha head). Its metrics measure a near-constant
    matte, not the method: the report lists it apart and leaves it out of the means, the paired
    differences and the gap. Results evaluated before the flat count existed fall back on the
    earlier count of one-value mattes (a one-value matte is flat); results older than both count as
    healthy until re-evaluated."""
    test = result["test"]
    flat = test.get("flat_predictions", test.get("constant_predictions"))
    return flat is not None and flat == test["count"]


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def _metric(result, region, group, metric):
    try:
        return result["test"]["results"][region][group][metric]
    except KeyError:
        return None


def summarise_table(table, results, families, seeds):
    """The JSON block of one table: per family, rows, paired differences, gap and order."""
    out = {"title": TITLES[table], "primary_region": REGION[table], "families": {}}
    dead = {key: r for key, r in results.items() if collapsed(r)}
    results = {key: r for key, r in results.items() if key not in dead}
    for family in families:
        rows = {}
        for variant in ROWS[table]:
            row_seeds = [0] if variant == "teacher" else list(seeds)
            found = {s: results[(family, variant, s)] for s in row_seeds if (family, variant, s) in results}
            dead_seeds = {s: dead[(family, variant, s)] for s in row_seeds if (family, variant, s) in dead}
            if not found and not dead_seeds:
                continue
            stats = {
                region: {
                    group: {m: _stats([_metric(r, region, group, m) for r in found.values()]) for m in METRICS}
                    for group in GROUPS
                }
                for region in ("whole", "transition")
            }
            rows[variant] = {
                "seeds": sorted(found),
                "collapsed": {s: _metric(r, REGION[table], "all", "sad") for s, r in sorted(dead_seeds.items())},
                "selection": sorted({r["selection"].split(" (")[0] for r in found.values()}),
                "stats": stats,
                "paper": PAPER[table][family].get(variant),
            }
        if not rows:
            continue
        block = {"rows": rows, "paired": _paired(table, family, results, seeds)}
        if table == 1:
            block["gap_closed"] = _gap_closed(family, results, seeds, rows, block["paired"].get("ppid - baseline", {}))
        block["order"] = _order(table, family, results, rows)
        block["provenance"] = _provenance(family, results, rows)
        block["recalibrated"] = _recalibrated(table, family, results, seeds)
        out["families"][family] = block
    return out


def _recalibrated(table, family, results, seeds):
    """The students' primary-region SAD (all images) with BatchNorm statistics recomputed on whole
    training composites (`test_recalibrated`, beyond the paper), and the paired differences
    against the reference row, over the runs evaluated that way."""
    recal = {key: dict(r, test=r["test_recalibrated"]) for key, r in results.items()
             if key[0] == family and r.get("test_recalibrated")}
    rows = {}
    for variant in ROWS[table]:
        values = [_metric(recal[(family, variant, s)], REGION[table], "all", "sad") for s in seeds if (family, variant, s) in recal]
        if values:
            rows[variant] = _stats(values)
    return {"rows": rows, "paired": _paired(table, family, recal, seeds)} if rows else None


def _paired(table, family, results, seeds):
    """Per row of a table, per group: the seed-paired SAD differences row - reference, and the seeds won."""
    return paired_differences(ROWS[table], REFERENCE[table], REGION[table], family, results, seeds)


def paired_differences(variants, ref, region, family, results, seeds):
    """Per row, per group: the seed-paired SAD differences row - ref in `region`, and the seeds won."""
    paired = {}
    for variant in variants:
        if variant in (ref, "teacher"):
            continue
        per_group = {}
        for group in GROUPS:
            diffs = []
            for s in seeds:
                a, b = results.get((family, variant, s)), results.get((family, ref, s))
                if a and b and _metric(a, region, group, "sad") is not None and _metric(b, region, group, "sad") is not None:
                    diffs.append(_metric(a, region, group, "sad") - _metric(b, region, group, "sad"))
            if diffs:
                per_group[group] = {"diffs": diffs, "mean": statistics.fmean(diffs), "ci95": mean_ci95(diffs),
                                    "wins": sum(d < 0 for d in diffs), "n": len(diffs)}
        if per_group:
            paired[f"{variant} - {ref}"] = per_group
    return paired


def mean_ci95(values):
    """The 95% confidence interval of the mean of `values` (Student's t, n - 1 degrees of freedom),
    or None for fewer than two. Over three seeds it is wide (t = 4.30): a paired difference whose
    interval holds zero is not told apart from the seed-to-seed spread."""
    if len(values) < 2:
        return None
    half = float(stdtrit(len(values) - 1, 0.975)) * statistics.stdev(values) / math.sqrt(len(values))
    mean = statistics.fmean(values)
    return [mean - half, mean + half]


def variance_components(groups):
    """How much of the spread of paired differences is the teacher's (one-way random effects,
    method of moments): `groups` holds each teacher's paired differences. Within: the standard
    deviation pooled over the teachers with two or more pairs. Between: the teachers' own spread,
    sqrt(var(teacher means) - within^2 * mean(1 / pairs)), floored at 0. None where a part is
    undefined (no teacher with two pairs; fewer than two teachers)."""
    groups = [list(g) for g in groups if g]
    means = [statistics.fmean(g) for g in groups]
    df = sum(len(g) - 1 for g in groups)
    within = None
    if df > 0:
        within = math.sqrt(sum((d - m) ** 2 for g, m in zip(groups, means) for d in g) / df)
    between = None
    if within is not None and len(groups) > 1:
        spread = statistics.variance(means)
        between = math.sqrt(max(0.0, spread - within ** 2 * statistics.fmean([1 / len(g) for g in groups])))
    return {"within_std": within, "between_std": between, "within_df": df}


def paired_text(d):
    """One group's paired difference as the report writes it: mean, 95% interval, seeds won."""
    ci = "" if d.get("ci95") is None else f", 95% CI {d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f}"
    return f"{d['mean']:+.2f} (wins {d['wins']}/{d['n']}{ci})"


def _gap_closed(family, results, seeds, rows, gain):
    """Share of the teacher-baseline SAD gap that PPID closes, per group, ours and the paper's.
    Ours compares the baseline and PPID means over the seeds that have both (paired), so that a
    seed run for one row only does not move the share by its seed's noise. Its 95% interval is the
    paired PPID - baseline difference's (`gain`, per group, from `paired_differences` over the same
    seeds) over the baseline-teacher gap, the gap taken as known: it shows the seed spread of the
    gain, not of the baseline."""
    paired = [s for s in seeds if (family, "baseline", s) in results and (family, "ppid", s) in results]
    teacher = results.get((family, "teacher", 0))
    out = {}
    if teacher is None or not paired:
        return out
    for group in GROUPS:
        t = _metric(teacher, "whole", group, "sad")
        b = [_metric(results[(family, "baseline", s)], "whole", group, "sad") for s in paired]
        p = [_metric(results[(family, "ppid", s)], "whole", group, "sad") for s in paired]
        if t is None or None in b or None in p:
            continue
        paper = {v: rows[v]["paper"][group]["sad"] for v in ("teacher", "baseline", "ppid")}
        gap = statistics.fmean(b) - t
        ci = gain.get(group, {}).get("ci95")
        out[group] = {
            "ours": gap_closed(statistics.fmean(b), statistics.fmean(p), t),
            "ci95": [-ci[1] / gap, -ci[0] / gap] if ci and gap > 0 else None,
            "paper": gap_closed(paper["baseline"], paper["ppid"], paper["teacher"]),
            "seeds": paired,
        }
    return out


def distill_ratios(root, runs, family, variant, seeds):
    """The strength gamma L_distn / L_alpha (causes.distill_ratio) of a row's runs of these seeds, from their logs."""
    folders = {run.seed: run.folder for run in runs if (run.family, run.variant) == (family, variant)}
    return [distill_ratio(Path(root) / folders[s]) for s in seeds]


def summarise_gamma_tests(root, runs, results, seeds):
    """The distillation-strength cause test (causes.py), per family with `ppid-gamma` runs in the
    plan: its baseline, PPID, cross-family and PPID-gamma rows (healthy runs), whole-image SAD per group over the
    seeds, with BatchNorm statistics recomputed, the strength gamma L_distn / L_alpha from the
    logs, and the seed-paired differences against the baseline."""
    gamma = {(run.family, run.variant): run.config["distill"]["gamma"] for run in runs if run.config["mode"] == "ppid"}
    tested = {}
    for run in runs:
        if run.variant.startswith(GAMMA_PREFIX) and run.variant not in tested.setdefault(run.family, []):
            tested[run.family].append(run.variant)
    out = {}
    for family, variants in tested.items():
        healthy = {k: r for k, r in results.items() if k[0] == family and not collapsed(r)}
        rows = {}
        for variant in ("baseline", "ppid", *CROSS_ROWS, *variants):
            found = {s: healthy[(family, variant, s)] for s in seeds if (family, variant, s) in healthy}
            if not found:
                continue
            recal = [_metric(dict(r, test=r["test_recalibrated"]), "whole", "all", "sad")
                     for r in found.values() if r.get("test_recalibrated")]
            ratios = distill_ratios(root, runs, family, variant, found) if variant != "baseline" else []
            rows[variant] = {
                "seeds": sorted(found),
                "gamma": gamma.get((family, variant)),
                "distill_ratio": _stats(ratios),
                "sad": {g: _stats([_metric(r, "whole", g, "sad") for r in found.values()]) for g in GROUPS},
                "sad_recalibrated": _stats(recal),
            }
        if rows:
            paired = paired_differences(list(rows), "baseline", "whole", family, healthy, seeds)
            out[family] = {"rows": rows, "paired": paired, "provenance": _provenance(family, healthy, rows)}
    return out


def summarise_teacher_seeds(root, runs, results, families, seeds, teacher_seeds):
    """Table 1's PPID gain per teacher seed and over teachers (teachers.py), per family with more
    than one teacher result. Per teacher: its whole-image SAD, its PPID students' SAD over the
    student seeds, their distillation strength gamma L_distn / L_alpha from the logs (does a
    teacher's gain follow how much its distillation weighs?), the seed-paired PPID - baseline
    differences (whole image per group, and the transition region) and the gap closed. Over teachers:
    the mean of the teachers' mean differences, their spread and 95% interval over the teachers
    (the teacher is then the unit: students of one teacher are not independent draws), and the
    teacher x student pairs won. "precision": the runs per precision where the baselines and
    students differ (a pair of two precisions is not like for like; the teachers differ by design)."""
    healthy = {k: r for k, r in results.items() if not collapsed(r)}
    out = {}
    for family in families:
        per_teacher = {}
        for t in teacher_seeds:
            teacher, variant = healthy.get((family, "teacher", t)), ppid_variant(t)
            if teacher is None:
                continue
            paired, transition = (paired_differences([variant], "baseline", region, family, healthy, seeds).get(f"{variant} - baseline", {})
                                  for region in ("whole", "transition"))
            students = [s for s in seeds if (family, variant, s) in healthy]
            both = [s for s in students if (family, "baseline", s) in healthy]
            b = [_metric(healthy[(family, "baseline", s)], "whole", "all", "sad") for s in both]
            p = [_metric(healthy[(family, variant, s)], "whole", "all", "sad") for s in both]
            t_sad = _metric(teacher, "whole", "all", "sad")
            per_teacher[t] = {
                "teacher_sad": {g: _metric(teacher, "whole", g, "sad") for g in GROUPS},
                "ppid_sad": _stats([_metric(healthy[(family, variant, s)], "whole", "all", "sad") for s in students]),
                "distill_ratio": _stats(distill_ratios(root, runs, family, variant, students)),
                "paired": paired,
                "paired_transition": transition.get("all"),
                "gap_closed": gap_closed(statistics.fmean(b), statistics.fmean(p), t_sad) if both else None,
            }
        if len(per_teacher) < 2:
            continue
        groups = [v["paired"]["all"]["diffs"] for v in per_teacher.values() if "all" in v["paired"]]
        rows = {v: {"seeds": [s for s in seeds if (family, v, s) in healthy]}
                for v in ("baseline", *(ppid_variant(t) for t in per_teacher))}
        precision = _provenance(family, healthy, rows).get("precision", {})
        out[family] = {"teachers": per_teacher, "precision": precision, "over_teachers": over_teachers(groups)}
    return out


def over_teachers(groups):
    """PPID's gain over teachers, the teacher as the unit: `groups` holds each teacher's paired
    differences. The mean of the teachers' means, their spread and 95% interval, the pairs won,
    and the variance components."""
    means = [statistics.fmean(g) for g in groups]
    diffs = [d for g in groups for d in g]
    return {"mean": statistics.fmean(means) if means else None,
            "std": statistics.stdev(means) if len(means) > 1 else None,
            "ci95": mean_ci95(means), "teachers": len(means),
            "pairs_won": sum(d < 0 for d in diffs), "pairs": len(diffs),
            **variance_components(groups)}


def teacher_seeds_markdown(block):
    lines = ["## Table 1 over teacher seeds (beyond the paper; `--teacher-seeds`)", "",
             "Each teacher seed is a teacher of the same family and config; its PPID students (one per student "
             "seed) are paired with the baseline of their seed. Whole-image SAD, all images unless named; "
             "difference = PPID - baseline (negative: PPID better). Over teachers, the teacher is the unit: "
             "the interval is over the teachers' mean differences (src/ppid/reproduce/teachers.py). Strength: "
             "gamma L_distn / L_alpha of the teacher's students, the mean over their logged steps.", ""]
    for family, fam in block.items():
        lines += [f"### {family}", "", "| teacher seed | teacher SAD | PPID SAD (seeds) | PPID - baseline, all | "
                  "transparent | non-transparent | transition region, all | gap closed | strength |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t, row in fam["teachers"].items():
            ppid = "-" if row["ppid_sad"] is None else f"{_fmt(row['ppid_sad'], 'sad')} ({row['ppid_sad']['n']})"
            cells = [paired_text(row["paired"][g]) if g in row["paired"] else "-" for g in ("all", *GROUPS[:-1])]
            cells.append(paired_text(row["paired_transition"]) if row["paired_transition"] else "-")
            gap = "-" if row["gap_closed"] is None else f"{100 * row['gap_closed']:.0f}%"
            strength = "-" if row["distill_ratio"] is None else f"{row['distill_ratio']['mean']:.2f}"
            lines.append(f"| {t} | {row['teacher_sad']['all']:.2f} | {ppid} | " + " | ".join(cells) + f" | {gap} | {strength} |")
        over = fam["over_teachers"]
        if over["teachers"] > 1:  # one teacher's pairs are that teacher's row above
            spread = "" if over["std"] is None else f", std over teachers {over['std']:.2f}"
            ci = "" if over["ci95"] is None else f", 95% CI {over['ci95'][0]:+.2f} to {over['ci95'][1]:+.2f}"
            lines.append("")
            parts = ""
            if over["between_std"] is not None:
                parts = (f" Spread of a pair's difference within a teacher {over['within_std']:.2f} "
                         f"({over['within_df']} df), of the teachers' own gains {over['between_std']:.2f} "
                         "(variance components, method of moments).")
            lines.append(f"Over {over['teachers']} teachers: mean difference {over['mean']:+.2f}{spread}{ci}; "
                         f"teacher x student pairs won {over['pairs_won']}/{over['pairs']}.{parts}")
        lines += ["", *provenance_markdown({"precision": fam["precision"]})] if fam["precision"] else []
        lines.append("")
    return lines


def gamma_tests_markdown(block):
    lines = ["## Cause test: distillation strength (beyond the paper; `--gamma-test`)", "",
             "Table 5 gives every family the same loss weights; what the distillation weighs against L_alpha "
             "follows the features' scale. Each PPID-gamma row is the family's PPID student with eq. 18's "
             "gamma scaled (src/ppid/reproduce/causes.py). Whole-image SAD; strength = gamma L_distn / L_alpha, "
             "the mean over the logged steps.", ""]
    for family, fam in block.items():
        lines += [f"### {family}", "",
                  "| row | seeds | strength | transparent SAD | non-transparent SAD | all SAD | all SAD, BatchNorm recomputed |",
                  "|---|---|---|---|---|---|---|"]
        for variant, row in fam["rows"].items():
            label = LABELS.get(variant) or f"PPID, gamma {row['gamma']:g}"
            cells = [_fmt(row["sad"][g], "sad") for g in GROUPS]
            lines.append(f"| {label} | {len(row['seeds'])} | {_fmt(row['distill_ratio'], 'sad')} | " + " | ".join(cells)
                         + f" | {_fmt(row['sad_recalibrated'], 'sad')} |")
        lines.append("")
        for name, per_group in fam["paired"].items():
            parts = [f"{g} {paired_text(d)}" for g, d in per_group.items()]
            lines.append(f"Paired SAD difference {name}, per seed, whole: " + "; ".join(parts) + ".")
        lines += provenance_markdown(fam["provenance"])
        lines.append("")
    return lines


def validation_curves(root, runs, results):
    """{family: {row: {seed: [[step, SAD], ...]}}}: the whole-image validation SAD (all images) at
    each validation step of Table 1's finished, healthy runs. A curve still falling at its last
    step says the schedule stopped before the model converged."""
    curves = {}
    for run in runs:
        result = results.get((run.family, run.variant, run.seed))
        if run.variant not in ROWS[1] or result is None or collapsed(result):
            continue
        by_step = {r["step"]: r["summary"]["results"]["whole"]["all"]["sad"]
                   for r in recorded_log(run, root) if r.get("event") == "validation"}
        if by_step:  # a resumed run may log a step twice: the last record counts
            curves.setdefault(run.family, {}).setdefault(run.variant, {})[run.seed] = sorted(by_step.items())
    return curves


def _order(table, family, results, rows):
    """Whether the mean SAD (primary region, whole test set) follows the paper's order, over the
    seeds every row has (means over different seeds would compare seeds, not rows)."""
    names = [v for v in ORDER[table] if v in rows and rows[v]["seeds"]]
    common = sorted(set.intersection(*(set(rows[v]["seeds"]) for v in names))) if names else []
    if len(names) < len(ORDER[table]) or not common:
        return {"expected": list(ORDER[table]), "holds": None}
    means = [statistics.fmean(_metric(results[(family, v, s)], REGION[table], "all", "sad") for s in common) for v in names]
    return {"expected": list(ORDER[table]), "seeds": common, "means": means,
            "holds": all(a < b for a, b in zip(means, means[1:]))}


def _provenance(family, results, rows):
    """What the rows' runs trained with, where they differ: {"precision": {value: [[row, seed],
    ...]}, "teacher": {"FAMILY sha256-prefix": [...]}}, each only when it differs (teachers are
    compared within a teacher family: a cross-family row's other teacher is by design). A plan
    resumed on another machine retrains a missing teacher and may lack hardware bf16, so the rows
    of one table can come from different teachers or precisions; the table should say so."""
    precision, teachers = {}, {}
    for variant, row in rows.items():
        teacher_family = variant[len(CROSS_PREFIX):] if variant.startswith(CROSS_PREFIX) else family
        for seed in row["seeds"]:
            result = results[(family, variant, seed)]
            precision.setdefault(result.get("precision") or "not recorded", []).append([variant, seed])
            if result.get("teacher_sha256"):
                by_hash = teachers.setdefault(teacher_family, {})
                by_hash.setdefault(result["teacher_sha256"][:8], []).append([variant, seed])
    out = {"precision": precision} if len(precision) > 1 else {}
    teacher = {f"{name} {sha}": members for name, by_hash in teachers.items() if len(by_hash) > 1
               for sha, members in by_hash.items()}
    return out | ({"teacher": teacher} if teacher else {})


def _runs_text(members):
    """[[row, seed], ...] -> "PPID (CLSD + ALD) seeds 0, 1; CLSD + L^f seed 0"."""
    seeds = {}
    for variant, seed in members:
        seeds.setdefault(variant, []).append(str(seed))
    return "; ".join(f"{LABELS.get(v, v)} seed{'s' if len(s) > 1 else ''} {', '.join(s)}" for v, s in seeds.items())


def provenance_markdown(provenance):
    """One line naming the runs per precision and per teacher, or [] when the rows agree."""
    parts = [f"{name} {value}: {_runs_text(members)}" for name, groups in provenance.items()
             for value, members in groups.items()]
    if not parts:
        return []
    return ["Not like for like (the rows trained with different settings; compare them with care): "
            + " | ".join(parts) + "."]


# -- writing --------------------------------------------------------------------------------------
def _fmt(stat, metric):
    if stat is None:
        return "-"
    digits = 4 if metric == "mse" else 2
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat["n"] > 1 else f"{stat['mean']:.{digits}f}"


def _paper_fmt(value, metric):
    if value is None:
        return "?"
    return f"{value:.3f}" if metric == "mse" else f"{value:.2f}"


def table_markdown(table, block, floor=None):
    lines = [f"## {block['title']}", ""]
    region = block["primary_region"]
    groups = GROUPS if table in (1, 3) else ("all",)
    for family, fam in block["families"].items():
        lines += [f"### {family}", ""]
        head = ["row", "seeds"] + [f"{g} {NAMES[m]}" for g in groups for m in METRICS]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for variant, row in fam["rows"].items():
            stats = row["stats"][region]
            cells = [_fmt(stats[g][m], m) for g in groups for m in METRICS]
            count = f"{len(row['seeds'])}" + (f" (+{len(row['collapsed'])} collapsed)" if row["collapsed"] else "")
            lines.append(f"| {LABELS[variant]} | {count} | " + " | ".join(cells) + " |")
            if row["paper"]:
                paper = [_paper_fmt(row["paper"][g][m], m) for g in groups for m in METRICS]
                lines.append("| *paper* | | " + " | ".join(paper) + " |")
        other = "transition" if region == "whole" else "whole"
        sads = "; ".join(
            f"{LABELS[v]} " + " / ".join(_fmt(r["stats"][other][g]["sad"], "sad") for g in GROUPS)
            for v, r in fam["rows"].items()
        )
        lines += ["", f"SAD on the {other} {'image' if other == 'whole' else 'region'} (transparent / non-transparent / all): {sads}."]
        if floor is not None and region in floor:
            empty = floor[region]["all"]["sad"]
            means = {v: r["stats"][region]["all"]["sad"] for v, r in fam["rows"].items()}
            above = [LABELS[v] for v, stat in means.items() if stat is not None and stat["mean"] > empty]
            lines.append(f"Above the empty matte's {region} SAD ({empty:.2f}, all images), i.e. worse than predicting "
                         f"nothing: {', '.join(above) if above else 'no row'}.")
        dead = [f"{LABELS[v]} seed {seed} ({region} SAD {sad:.2f})" for v, r in fam["rows"].items() for seed, sad in r["collapsed"].items()]
        if dead:
            lines.append(f"Collapsed (a flat alpha on every test image; left out of the means, the paired differences "
                         f"and the gap): {'; '.join(dead)}.")
        for name, per_group in fam["paired"].items():
            parts = [f"{g} {paired_text(d)}" for g, d in per_group.items()]
            lines.append(f"Paired SAD difference {name}, per seed, {region}: " + "; ".join(parts) + ".")
        for group, gap in fam.get("gap_closed", {}).items():
            ours = "n/a" if gap["ours"] is None else f"{100 * gap['ours']:.0f}%"
            seeds_used = ", ".join(map(str, gap["seeds"]))
            ci = "" if gap.get("ci95") is None else f", 95% CI {100 * gap['ci95'][0]:.0f}% to {100 * gap['ci95'][1]:.0f}%"
            lines.append(f"Gap closed ({group}): ours {ours} (seed{'s' if len(gap['seeds']) > 1 else ''} {seeds_used}, "
                         f"paired{ci}), paper {100 * gap['paper']:.0f}%.")
        if fam.get("recalibrated"):
            recal = fam["recalibrated"]
            means = "; ".join(f"{LABELS[v]} {_fmt(stat, 'sad')} ({stat['n']})" for v, stat in recal["rows"].items())
            pairs = "; ".join(f"{name} {paired_text(d['all'])}"
                              for name, d in recal["paired"].items() if "all" in d)
            lines.append(f"With BatchNorm statistics recomputed on whole training composites (beyond the paper; "
                         f"`ppid recalibrate`), {region} SAD, all images (seeds): {means}." + (f" Paired: {pairs}." if pairs else ""))
        order = fam["order"]
        if order["holds"] is not None:
            seeds = ", ".join(map(str, order["seeds"]))
            lines.append(f"Paper's order {' < '.join(order['expected'])} (mean SAD over the seeds every row has, {seeds}; all images): "
                         f"{'holds' if order['holds'] else 'does not hold'} ({', '.join(f'{m:.2f}' for m in order['means'])}).")
        lines += provenance_markdown(fam["provenance"])
        lines.append("")
    return lines


def protocol(settings, data, results, seeds, teacher_seeds, budget, families):
    devices = sorted({r["device"] for r in results.values()})
    precision = sorted({r["config"]["train"]["amp"] for r in results.values()})
    used = {r.get("precision") or "not recorded" for r in results.values()}
    return {
        "budget": budget,
        "hardware": devices,
        "precision": f"autocast {'/'.join(precision)} where the device supports it (CPU: bf16 in hardware only), evaluation "
                     f"float32 on the device that trained the run; trained in: {', '.join(sorted(used))} "
                     "(recorded from 2026-11-27; before it, CPUs without hardware bf16 emulated it)",
        "iterations": settings["iterations"],
        "crop": settings["size"],
        "batch_size": settings["batch_size"],
        "optimiser": "SGD momentum 0.9, weight decay 5e-4, lr 0.01 poly 0.9 (Section 4.2)",
        "loss_weights": "Table 5",
        "benchmark": f"ppid data synth version {data['synth_version']}, {data['synth_size']} px: "
                     f"{data['n_train']} training, {data['n_val']} validation, {data['n_test']} test foregrounds "
                     f"x {data['test_per_fg']} backgrounds; synth seeds {data['seeds']}",
        "seeds": list(seeds),
        "teacher_seeds": list(teacher_seeds),
        "selection": SELECTION,
        "collapsed_runs": f"a run whose selected model predicts a flat alpha (fewer than {FLAT_LEVELS} of 256 levels) on every test "
                          "image is listed apart, left out of the means, paired differences and gap (first rule: one "
                          f"value, fixed before the runs it applied to; widened to {FLAT_LEVELS} levels after DIM PPID seed 0)",
        "imagenet_init": False,
        "network_revisions": {family: revision(family) for family in families},
        "units": "SAD, Grad, Conn / 1000 as the DIM benchmark; the paper's images are ~1-2 Mpx, ours "
                 f"{data['synth_size']}^2, so absolute values are not comparable, only orders and shares",
    }


def empty_matte(root, data):
    """The metrics of an empty matte (alpha 0 everywhere, no model) on the plan's test set, per
    group and region: the floor below which a trimap-free row has learned something a metric can
    see. Kept in EMPTY_MATTE beside the report with the data spec it was measured on (the data is
    seeded, so the floor is fixed by the spec: a report written where the data is gone, or on a
    fresh machine that rebuilt the same data, still has it; a floor of another spec is measured
    again, or dropped where the data is gone); None where no floor of this spec can be had."""
    from ..data.datasets import CompositeTestSet

    cache, test = Path(root) / EMPTY_MATTE, Path(root) / "data" / "test"
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("data") == json.loads(json.dumps(data)):  # as read back: tuples are lists
            return kept["results"]
    if not test.is_dir():
        return None
    summary = empty_matte_summary(CompositeTestSet(test))["results"]
    with atomic_path(cache) as tmp:
        tmp.write_text(json.dumps({"data": data, "results": summary}, indent=2) + "\n")
    return summary


def empty_matte_markdown(floor):
    def cells(region, metric):
        return " / ".join(_fmt({"mean": floor[region][g][metric], "n": 1}, metric) for g in GROUPS)

    return ["## The floor: an empty matte (beyond the paper)", "",
            "Alpha 0 everywhere, no model, on the same test set (transparent / non-transparent / all): whole-image "
            f"SAD {cells('whole', 'sad')}, MSE {cells('whole', 'mse')}, Grad {cells('whole', 'grad')}, Conn "
            f"{cells('whole', 'conn')}" + (f"; transition-region SAD {cells('transition', 'sad')}" if "transition" in floor else "")
            + ". A trimap-free row above "
            "this on a metric does worse than predicting nothing there: the foregrounds cover little of each image, "
            "so haze on the background costs more than the object it misses.", ""]


def write_report(root, runs, settings, data, tables, families, seeds, budget, teacher_seeds=(0,)):
    root = Path(root)
    results = load_results(root, runs)
    diverged = diverged_runs(root, runs)
    doc = {"protocol": protocol(settings, data, results, seeds, teacher_seeds, budget, families),
           "runs_done": len(results) + len(diverged), "runs_planned": len(runs), "runs_diverged": diverged, "tables": {}}
    lines = ["# PPID-IM reproduction", "", f"{doc['runs_done']} of {len(runs)} planned runs finished.", ""]
    if diverged:
        lines += ["Diverged (the loss stayed NaN/inf, so training stopped; no test result, left out of every "
                  "table and mean): " + ", ".join(f"`{folder}` from step {step}" for folder, step in diverged.items())
                  + ". Each run's result.json says so; delete it to train the run again.", ""]
    lines += ["Protocol:", ""]
    lines += [f"- {k}: {v}" for k, v in doc["protocol"].items()] + [""]
    floor = empty_matte(root, data)
    if floor is not None:
        doc["empty_matte"] = floor
        lines += empty_matte_markdown(floor)
    for table in sorted(tables):
        block = summarise_table(table, results, families, seeds)
        doc["tables"][str(table)] = block
        if block["families"]:
            lines += table_markdown(table, block, floor)
            chart = root / f"table{table}.png"
            bar_chart(block, table, chart)
            lines += [f"![{block['title']}](table{table}.png)", ""]
    teachers = summarise_teacher_seeds(root, runs, results, families, seeds, teacher_seeds)
    if teachers:
        doc["teacher_seeds"] = teachers
        lines += teacher_seeds_markdown(teachers)
    gamma_tests = summarise_gamma_tests(root, runs, results, seeds)
    if gamma_tests:
        doc["cause_tests"] = {"distillation_strength": gamma_tests}
        lines += gamma_tests_markdown(gamma_tests)
    curves = validation_curves(root, runs, results)
    if curves:
        doc["validation_curves"] = curves
        lines += curves_markdown(curves)
        curves_chart(curves, root / "curves.png")
        lines += ["![Table 1 validation curves](curves.png)", ""]
    with atomic_path(root / "tables.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    with atomic_path(root / "tables.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return doc


def bar_chart(block, table, path):
    """Mean SAD (primary region, all images) per row with the seed spread and each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(block["families"])
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6), squeeze=False)
    for ax, family in zip(axes[0], families):
        rows = block["families"][family]["rows"]
        names = [v for v in rows if rows[v]["seeds"]]
        stats = [rows[v]["stats"][block["primary_region"]]["all"]["sad"] for v in names]
        xs = range(len(names))
        ax.bar(xs, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], capsize=4, color="#8fb3d9", edgecolor="#2d5d8a")
        for x, s in zip(xs, stats):
            ax.plot([x] * len(s["values"]), s["values"], "o", color="#1b3a57", markersize=3)
        ax.set_xticks(list(xs), [LABELS[v] for v in names], rotation=30, ha="right", fontsize=8)
        ax.set_title(family)
        ax.set_ylabel(f"SAD ({block['primary_region']}, all images)")
    fig.suptitle(block["title"], fontsize=9)
    _save_png(fig, path)


def curves_markdown(curves):
    lines = ["## Table 1: validation curves", "",
             "Whole-image SAD on the validation split (all images) at each validation step, mean over the "
             "finished seeds; the last column is the change over the last interval, per seed. A row still "
             "falling at its last step has not converged within the schedule.", ""]
    for family, rows in curves.items():
        steps = sorted({step for seeds in rows.values() for curve in seeds.values() for step, _ in curve})
        lines += [f"### {family}", "", "| row | seeds | " + " | ".join(f"step {s}" for s in steps) + " | last interval |",
                  "|" + "---|" * (len(steps) + 3)]
        for variant, seeds in rows.items():
            by_step = [dict(curve) for curve in seeds.values()]
            at = [[sads[step] for sads in by_step if step in sads] for step in steps]
            means = [statistics.fmean(values) if values else None for values in at]
            last = " / ".join(f"{c[-1][1] - c[-2][1]:+.2f}" for c in seeds.values() if len(c) > 1) or "-"
            cells = ["-" if m is None else f"{m:.2f}" for m in means]
            lines.append(f"| {LABELS[variant]} | {len(seeds)} | " + " | ".join(cells) + f" | {last} |")
        lines.append("")
    return lines


def curves_chart(curves, path):
    """One panel per family: each run's validation SAD against the step, one colour per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (family, rows) in zip(axes[0], curves.items()):
        for i, (variant, seeds) in enumerate(rows.items()):
            for j, curve in enumerate(seeds.values()):
                steps, sads = zip(*curve)
                ax.plot(steps, sads, "o-", color=f"C{i}", markersize=3, linewidth=1, label=LABELS[variant] if j == 0 else None)
        ax.set_title(family)
        ax.set_xlabel("step")
        ax.set_ylabel("validation SAD (whole, all images)")
        ax.legend(fontsize=7)
    _save_png(fig, path)


def _save_png(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
