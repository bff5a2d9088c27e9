"""Cause tests (beyond the paper): plan runs that test a candidate cause of a missed target.

Distillation strength (`--gamma-test FAMILY=GAMMA[,FAMILY=GAMMA]`). Table 5 gives every family the same loss
weights, but the distillation terms' size against L_alpha follows the features' scale: over the
`cpu_small` PPID runs, L_distn / L_alpha averaged 7.5 for IndexNet's students and 1.3 for GCA's
and for IndexNet's student of the GCA teacher, and only the first gained over its baseline. A
`ppid-gamma<G>` run is the family's PPID student with eq. 18's gamma = G (every distillation term
scaled by G), on the plan's data, schedule, seeds and protocol; the report sets it beside the
family's baseline and PPID rows. Swapping the two families' strengths (GCA x6, IndexNet x0.17)
asks whether the strength, not the teacher's knowledge, decides the gain; a family named twice
(`gca=6,gca=3`) gets both, which separates a strength that helps from one that destabilises.
"""

import copy
import statistics

from .. import PpidError
from .plan import FAMILIES, TABLE_VARIANTS, Run, read_log, run_hash

PREFIX = "ppid-gamma"


def parse_gamma_tests(text):
    """`FAMILY=GAMMA[,FAMILY=GAMMA]` -> {family: [gamma, ...]} in the order given ({} when not
    given); a family may be named more than once."""
    if not text:
        return {}
    tests = {}
    for item in text.split(","):
        family, sep, value = item.strip().partition("=")
        try:
            gamma = float(value)
        except ValueError:
            gamma = None
        if not sep or family not in FAMILIES or gamma is None or not gamma > 0:
            raise PpidError(f"--gamma-test expects FAMILY=GAMMA with a family of {', '.join(FAMILIES)} and a "
                            f"positive number, got {item.strip()!r}")
        if gamma in tests.get(family, []):
            raise PpidError(f"--gamma-test names {family}={gamma:g} twice")
        tests.setdefault(family, []).append(gamma)
    return tests


def gamma_variant(gamma):
    return f"{PREFIX}{gamma:g}"


def gamma_runs(runs, data, tests):
    """Per tested family, gamma (in the order given) and seed, its PPID run with distill.gamma
    scaled; the same teacher."""
    by_folder = {run.folder: run for run in runs}
    ppid = [run for run in runs if run.variant == "ppid" and run.family in tests]
    extra = []
    for family, gammas in tests.items():
        for scale in gammas:
            for run in (r for r in ppid if r.family == family):
                cfg = copy.deepcopy(run.config)
                cfg["distill"]["gamma"] = run.config["distill"]["gamma"] * scale
                variant = gamma_variant(scale)
                cfg["name"] = f"{run.family}_{variant}_seed{run.seed}"
                extra.append(Run(run.family, variant, run.seed, cfg,
                                 run_hash(cfg, data, by_folder[run.teacher].hash), run.teacher))
    return extra


def with_gamma_tests(runs, data, tests):
    """The plan with each tested family's gamma runs after that family's Table 1 runs (the test
    is about Table 1's target): the first gamma's seeds in order, then the next gamma's."""
    extra = gamma_runs(runs, data, tests)
    table1 = set(TABLE_VARIANTS[1]) | {"teacher"}
    for family in tests:
        own = [r for r in extra if r.family == family]
        at = max((i for i, r in enumerate(runs) if r.family == family and r.variant in table1), default=None)
        if own and at is not None:
            runs = runs[:at + 1] + own + runs[at + 1:]
    return runs


def distill_ratio(folder):
    """gamma L_distn / L_alpha, the mean over a run's logged steps of the sum of its logged
    `ratio_*` terms (each term as it weighs in the total)."""
    steps = [r for r in read_log(folder) if "event" not in r and any(k.startswith("ratio_") for k in r)]
    return statistics.fmean(sum(v for k, v in r.items() if k.startswith("ratio_")) for r in steps) if steps else None
