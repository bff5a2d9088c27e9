"""Teacher seeds (beyond the paper; `--teacher-seeds 0,1,2`): Table 1's PPID students from more
than one teacher of the same family and config.

The plan trains one teacher per family (seed 0) and distils every student from it, so a PPID
result mixes the student's seed with one draw of the teacher. On `cpu_small` two IndexNet teachers
of the same seed and config, equally good on the test set (whole-image SAD 2.23 and 2.18), gave
PPID students about two seed spreads apart (results/precision_control/): a claim about PPID
needs its spread over teachers too. Each extra teacher seed T adds the teacher run
`runs/FAMILY/teacher/seedT` and, per student seed, its PPID student `runs/FAMILY/ppid-teacherT/seedS`
(the plan's PPID config, distilling from teacher T). Seed 0 is the plan's own teacher and "ppid"
row, so adding teacher seeds keeps every planned run's folder and hash. The report pairs each
student with the baseline of its seed and summarises per teacher and over teachers.
"""

import copy

from .plan import TABLE_VARIANTS, Run, run_config, run_hash

PREFIX = "ppid-teacher"


def ppid_variant(teacher_seed):
    """The Table 1 PPID row distilled from teacher `teacher_seed` (the plan's "ppid" for seed 0)."""
    return "ppid" if teacher_seed == 0 else f"{PREFIX}{teacher_seed}"


def one_student_per_teacher(runs, seeds, teacher_seeds):
    """Of the Table 1 PPID students, keep for teacher T only student seed seeds[T % len(seeds)]:
    with the teacher as the unit, another teacher narrows the mean gain more than another student
    of the same teacher does (docs/results.md, "What the next runs should be"), and rotating the
    seed pairs the teachers with every baseline."""
    students = {ppid_variant(t) for t in teacher_seeds}
    kept = {(ppid_variant(t), seeds[t % len(seeds)]) for t in teacher_seeds}
    return [r for r in runs if r.variant not in students or (r.variant, r.seed) in kept]


def teacher_seed_runs(runs, settings, data, teacher_seeds):
    """Per family with Table 1 PPID students and per extra teacher seed: the teacher, then its PPID
    student of every student seed (the plan's PPID config with that teacher)."""
    extra = []
    for t in (t for t in dict.fromkeys(teacher_seeds) if t != 0):
        for family in dict.fromkeys(r.family for r in runs if r.variant == "ppid"):
            cfg = run_config(family, "teacher", t, settings)
            teacher = Run(family, "teacher", t, cfg, run_hash(cfg, data, None), None)
            extra.append(teacher)
            for run in (r for r in runs if r.family == family and r.variant == "ppid"):
                cfg = copy.deepcopy(run.config)
                cfg["distill"]["teacher"] = f"{teacher.folder}/model_best.safetensors"
                cfg["name"] = f"{family}_{ppid_variant(t)}_seed{run.seed}"
                extra.append(Run(family, ppid_variant(t), run.seed, cfg, run_hash(cfg, data, teacher.hash), teacher.folder))
    return extra


def with_teacher_seeds(runs, settings, data, teacher_seeds):
    """The plan with each family's extra teachers and their students right after that family's
    Table 1 runs, teacher by teacher."""
    extra = teacher_seed_runs(runs, settings, data, teacher_seeds)
    table1 = set(TABLE_VARIANTS[1]) | {"teacher"}
    for family in dict.fromkeys(r.family for r in extra):
        at = max(i for i, r in enumerate(runs) if r.family == family and r.variant in table1)
        runs = runs[:at + 1] + [r for r in extra if r.family == family] + runs[at + 1:]
    return runs
